"""Rekeys reach ``vt status`` and the metrics: a sealing link reports its sealer's epochs,
and the status document of a session carries them (with the tunnel's last-frame age)."""

from __future__ import annotations

from types import SimpleNamespace

from vt_crypto.secure.mode import SealedLink
from vt_crypto.secure.seal import Opener, Sealer

from vtcore.runtime.status import session_status
from vtcore.transports.base import VTUN_FRAMING

KEY = bytes(range(32))
SUITE = "chacha20poly1305"


def test_sealed_link_rekeys_are_in_the_session_status() -> None:
    inner = SimpleNamespace(framing=VTUN_FRAMING, ready=lambda: True)
    link = SealedLink(inner, Sealer(KEY, SUITE, rekey_frames=2), Opener(KEY, SUITE),
                      stream=True, max_payload=1500)
    for _ in range(7):  # two frames per epoch: the 7th is sealed in epoch 3
        link.framing.data(b"payload")
    assert link.rekeys == 3
    session = SimpleNamespace(
        host=SimpleNamespace(name="office"), peer="10.0.0.2:4000", udp_peer=None,
        started=0.0, device=None, counters=SimpleNamespace(as_dict=dict),
        settings=SimpleNamespace(options={}, transport="tcp", tunnel_type="tun"),
        tunnel=SimpleNamespace(link=link, pull_counters=lambda: None,
                               link_idle=lambda now: 0.25),
    )
    status = session_status(session)
    assert (status["rekeys"], status["last_frame_age"]) == (3, 0.25)
