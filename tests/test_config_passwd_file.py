"""``passwd_file PATH;`` (vt only, issue 17 item 9): the password lives outside a shared
config, in a file that only its owner may read; anything else is a FILE:LINE:COL error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from netns import requires_netns

from vtcore.cli import cli
from vtcore.config import ConfigErrors, load_config
from vtcore.config.keywords import KeywordError, resolve_keyword

SECRET = "S3cret-from-a-file"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "office.pw"
    path.write_text(f"{SECRET}\nnot part of the password\n")
    path.chmod(0o600)
    return path


def _conf(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "vt.conf"
    path.write_text(body)
    path.chmod(0o644)  # shared: it holds no password
    return path


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as exc:
        load_config(str(path))
    return [str(e) for e in exc.value.errors]


def test_password_read_from_the_file_beside_the_config(tmp_path, secret) -> None:
    conf = _conf(tmp_path, "office {\n  passwd_file office.pw;\n  type tun;\n}\n")
    host = load_config(str(conf)).hosts["office"]
    assert host.password_bytes() == SECRET.encode()
    assert host.passwd_file == "office.pw"
    assert SECRET not in repr(host)


def test_config_check_is_quiet_about_a_shared_config_without_passwords(tmp_path, secret):
    """The config may be world-readable: the password is not in it (no warning), and no
    output ever shows the password."""
    conf = _conf(tmp_path, f'office {{ passwd_file "{secret}"; encrypt aead; }}\n')
    res = CliRunner().invoke(cli, ["config", "check", "-f", str(conf)])
    assert (res.exit_code, res.stdout, res.stderr) == (0, f"{conf}: ok (1 host)\n", "")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660])
def test_file_others_may_read_or_write_is_an_error_at_its_position(tmp_path, secret, mode):
    secret.chmod(mode)
    conf = _conf(tmp_path, "office {\n  type tun;\n  passwd_file office.pw;\n}\n")
    (error,) = _errors(conf)
    assert error == (f"{conf}:3:15: passwd_file {secret} may be read or written by group "
                     f"or others (mode {mode:04o}); chmod 600 it")


def test_file_owned_by_another_user_is_an_error(tmp_path, secret) -> None:
    requires_netns()  # root: to give the file away
    os.chown(secret, 65534, 65534)
    conf = _conf(tmp_path, f"office {{ passwd_file {secret}; }}\n")
    (error,) = _errors(conf)
    assert error.startswith(f"{conf}:1:22: passwd_file {secret} belongs to uid 65534"), error


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "cannot read passwd_file {p}: No such file or directory"),
    (lambda p: p.symlink_to(p.parent / "office.pw"),
     "cannot read passwd_file {p}: Too many levels of symbolic links (a symlink"),
    (lambda p: p.mkdir(mode=0o700), "passwd_file {p} is not a regular file"),
    (lambda p: (p.write_text("\nsecond line\n"), p.chmod(0o600)),
     "passwd_file {p}: its first line (the password) is empty"),
    (lambda p: (p.write_bytes(b"x" * 5000), p.chmod(0o600)),
     "passwd_file {p} is over 4096 bytes"),
])
def test_unusable_files_are_errors(tmp_path, secret, make, message) -> None:
    target = tmp_path / "other.pw"
    make(target)
    conf = _conf(tmp_path, f"office {{ passwd_file {target}; }}\n")
    (error,) = _errors(conf)
    assert error.startswith(f"{conf}:1:22: " + message.format(p=target)), error


def test_passwd_and_passwd_file_together_is_an_error(tmp_path, secret) -> None:
    conf = _conf(tmp_path, "office {\n  passwd abc;\n  passwd_file office.pw;\n}\n")
    assert _errors(conf) == [f"{conf}:3:15: both passwd and passwd_file in one host: keep one"]


def test_not_inherited_from_default_and_never_abbreviated(tmp_path, secret) -> None:
    """``pass`` stays vtund's ``passwd`` (vtund.conf(5)'s 4-letter abbreviations); a
    default's passwd_file gives no host a password, as a default's passwd does not."""
    assert resolve_keyword("pass") == resolve_keyword("passw") == "passwd"
    with pytest.raises(KeywordError):
        resolve_keyword("passwd_fil")
    conf = _conf(tmp_path, "default { passwd_file office.pw; }\noffice { type tun; }\n")
    assert load_config(str(conf)).hosts == {}


@pytest.mark.netns
def test_both_ends_authenticate_with_passwords_from_files(tmp_path, secret) -> None:
    """The password from the file is the one the handshake uses, on either end."""
    from netns import two_hosts, wait_ping
    from peers import VtClient, VtServer

    with two_hosts() as p:
        ta, _ = p.add_tunnel_devices()
        body = "options {{ timeout 5; }}\noffice {{\n  passwd_file {pw};\n  device {dev};\n{more}}}\n"
        srv = body.format(pw=secret, dev="tsrv", more="  type tun;\n  proto udp;\n")
        cli = body.format(pw=secret, dev="tcli", more="")
        with VtServer(p.a, srv) as s, VtClient(p.b, cli, "office", p.a_addr) as c:
            wait_ping(p.b, ta, timeout=15)
            logs = s.log() + c.log()
    assert "session up" in logs and SECRET not in logs
