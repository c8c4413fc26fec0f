"""Hook implementations: the ``pcap`` frame module and the ``vt pcap-info`` command.

Found by vt through the entry point ``pcap = "vt_pcap.plugin"`` in the group
``vt.plugins`` (see pyproject.toml).
"""

from __future__ import annotations

import click
import structlog
from vtcore import hookimpl
from vtcore.api import FrameModuleType, LinkSettings, Registry

from vt_pcap.module import PcapModule
from vt_pcap.pcapfile import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapError, summarize

STAGE = 50
"""Before compression (100) on the way out, after it on the way in: the file sees the
packets as the devices do."""

KEYWORD = "pcap"
LINKTYPES = {"tun": LINKTYPE_RAW, "ether": LINKTYPE_ETHERNET}

log = structlog.get_logger("vt.pcap")


def capture_path(settings: LinkSettings) -> str | None:
    """The file named by ``pcap "FILE";`` in the host section, if any.

    The core passes host-section extras in ``settings.options``; accept the plain text or a
    value record (``.value``/``.text``), with or without the quotes of the file.
    """
    raw = settings.options.get(KEYWORD)
    if raw is None:
        return None
    for attr in ("value", "text"):
        if not isinstance(raw, str) and hasattr(raw, attr):
            raw = getattr(raw, attr)
    text = str(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text or None


def create(settings: LinkSettings) -> PcapModule | None:
    """A capture for sessions whose host section names a file; None for the others."""
    path = capture_path(settings)
    if path is None:
        return None
    linktype = LINKTYPES.get(settings.tunnel_type)
    if linktype is None:
        log.warning("pcap needs type tun or ether; not capturing", host=settings.host,
                    type=settings.tunnel_type)
        return None
    return PcapModule(path, linktype, host=settings.host)


@hookimpl
def vt_register_frame_modules(registry: Registry) -> None:
    registry.add_frame_module(
        FrameModuleType(
            name="pcap",
            stage=STAGE,
            keyword=KEYWORD,
            words={},
            create=create,
            describe='pcap "FILE" (packet capture)',
        )
    )


@click.command("pcap-info")
@click.argument("file", type=click.Path(dir_okay=False))
def pcap_info(file: str) -> None:
    """Print how many packets the capture FILE holds."""
    try:
        with open(file, "rb") as f:
            s = summarize(f)
    except OSError as exc:
        raise click.ClickException(f"{file}: {exc.strerror or exc}") from None
    except PcapError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    click.echo(f"{file}: {s.packets} packets, {s.bytes} bytes, "
               f"linktype {s.linktype_name} ({s.linktype})")
    if s.truncated:
        raise click.ClickException(f"{file}: the last record is truncated")


@hookimpl
def vt_register_commands(cli: click.Group) -> None:
    cli.add_command(pcap_info)
