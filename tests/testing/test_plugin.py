"""The ``smtp_server`` pytest fixture, used the way an application's tests use it.

Each test writes a test file as an application would, runs it in an inner
pytest session (pytester) and checks its outcome. The plugin reaches the
inner session through the ``pytest11`` entry point when fastsmtp-engine is
installed, and through ``-p fastsmtp.testing`` when the tests run from a
source tree; one test checks the entry point itself by installing it as a
distribution would, in a subprocess.
"""

from __future__ import annotations

import importlib.metadata
import os
import smtplib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import fastsmtp
from fastsmtp import Reply
from fastsmtp.testing import SMTPTestServer

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PACKAGE_ROOT = Path(fastsmtp.__file__).resolve().parent.parent


def _autoloaded() -> bool:
    """Will pytest load the plugin by itself (installed entry point, autoload on)?"""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(
        ep.value == "fastsmtp.testing"
        for ep in importlib.metadata.entry_points(group="pytest11", name="fastsmtp")
    )


PLUGIN_ARGS = () if _autoloaded() else ("-p", "fastsmtp.testing")
# The other test extras' plugins cost seconds per inner session (pytester
# re-imports hypothesis each time; pytest-benchmark probes the machine) and
# the inner sessions use neither.
QUIET = ("-p", "no:benchmark", "-p", "no:hypothesispytest", "-q")


def run_inner(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_app=source)
    return pytester.runpytest(*PLUGIN_ARGS, *QUIET)


def test_a_test_sends_mail_with_smtplib_and_reads_it_back(pytester):
    result = run_inner(
        pytester,
        """
        import smtplib

        def send_welcome(address, to):
            with smtplib.SMTP(*address) as client:
                client.sendmail(
                    "app@example.com", [to],
                    b"From: app@example.com\\r\\nTo: " + to.encode() +
                    b"\\r\\nSubject: Welcome!\\r\\n\\r\\nHello there.\\r\\n",
                )

        def test_signup_sends_a_welcome_mail(smtp_server):
            host, port = smtp_server.address
            assert host == "127.0.0.1" and port > 0
            send_welcome(smtp_server.address, "zoe@example.com")
            [message] = smtp_server.wait_for(1)
            assert message["Subject"] == "Welcome!"
            assert message["To"] == "zoe@example.com"
            assert message.get_content() == "Hello there.\\n"
            [envelope] = smtp_server.envelopes
            assert envelope.mail_from == "app@example.com"
            assert envelope.rcpt_tos == ["zoe@example.com"]
            assert smtp_server.messages == [message]
        """,
    )
    result.assert_outcomes(passed=1)


def test_messages_keep_arrival_order_and_each_test_gets_its_own_server(pytester):
    result = run_inner(
        pytester,
        """
        import smtplib, socket
        import pytest

        seen = []

        def test_first(smtp_server):
            with smtplib.SMTP(*smtp_server.address) as client:
                for n in range(3):
                    client.sendmail("a@example.com", ["b@example.com"], f"Subject: {n}\\r\\n\\r\\n")
            assert [m["Subject"] for m in smtp_server.wait_for(3)] == ["0", "1", "2"]
            seen.append(smtp_server.address)

        def test_second(smtp_server):
            assert smtp_server.messages == [] and smtp_server.envelopes == []
            # The first test's server was stopped when that test ended.
            with pytest.raises(OSError):
                socket.create_connection(seen[0], timeout=2)

        def test_wait_for_gives_up(smtp_server):
            with pytest.raises(TimeoutError, match="0 of 1"):
                smtp_server.wait_for(1, timeout=0.2)
        """,
    )
    result.assert_outcomes(passed=3)


def test_fail_next_rcpt(pytester):
    result = run_inner(
        pytester,
        """
        import smtplib
        import pytest
        from fastsmtp import Reply

        def test_one_recipient_refused(smtp_server):
            smtp_server.fail_next_rcpt(Reply(550, "5.1.1", "No such user"))
            with smtplib.SMTP(*smtp_server.address) as client:
                refused = client.sendmail(
                    "a@example.com", ["gone@example.com", "here@example.com"], b"\\r\\n"
                )
            assert refused == {"gone@example.com": (550, b"5.1.1 No such user")}
            [envelope] = smtp_server.envelopes
            assert envelope.rcpt_tos == ["here@example.com"]

        def test_default_reply_and_times(smtp_server):
            smtp_server.fail_next_rcpt(times=2)
            with smtplib.SMTP(*smtp_server.address) as client:
                with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                    client.sendmail("a@example.com", ["x@example.com", "y@example.com"], b"\\r\\n")
                assert refused.value.recipients["y@example.com"][0] == 550
                # The failures are used up: the next message goes through.
                assert client.sendmail("a@example.com", ["x@example.com"], b"\\r\\n") == {}
            assert len(smtp_server.wait_for(1)) == 1

        def test_temporary_failure(smtp_server):
            smtp_server.fail_next_rcpt(Reply(450, "4.2.1", "Mailbox busy, try later"))
            with smtplib.SMTP(*smtp_server.address) as client:
                with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                    client.sendmail("a@example.com", ["b@example.com"], b"\\r\\n")
            assert refused.value.recipients == {
                "b@example.com": (450, b"4.2.1 Mailbox busy, try later")
            }
            assert smtp_server.messages == []
        """,
    )
    result.assert_outcomes(passed=3)


def test_fail_next_data(pytester):
    result = run_inner(
        pytester,
        """
        import smtplib
        import pytest
        from fastsmtp import Reply

        def test_refused_then_accepted(smtp_server):
            smtp_server.fail_next_data(Reply(451, "4.3.0", "Try again later"))
            with smtplib.SMTP(*smtp_server.address) as client:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("a@example.com", ["b@example.com"], b"Subject: 1\\r\\n\\r\\n")
                assert (refused.value.smtp_code, refused.value.smtp_error) == (
                    451, b"4.3.0 Try again later"
                )
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: 2\\r\\n\\r\\n")
            [message] = smtp_server.wait_for(1)
            assert message["Subject"] == "2"

        def test_default_data_failure_is_permanent(smtp_server):
            smtp_server.fail_next_data()
            with smtplib.SMTP(*smtp_server.address) as client:
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    client.sendmail("a@example.com", ["b@example.com"], b"\\r\\n")
            assert refused.value.smtp_code == 554
            assert smtp_server.messages == []
        """,
    )
    result.assert_outcomes(passed=2)


def test_utf8_subjects_are_parsed(pytester):
    result = run_inner(
        pytester,
        """
        import smtplib
        from email.message import EmailMessage

        SUBJECT = "Grüße aus Köln ✓"

        def test_encoded_words(smtp_server):
            # What most applications send: RFC 2047 encoded words, 7-bit on the wire.
            outgoing = EmailMessage()
            outgoing["From"] = "app@example.com"
            outgoing["To"] = "zoe@example.com"
            outgoing["Subject"] = SUBJECT
            outgoing.set_content("Schöne Grüße\\n")
            with smtplib.SMTP(*smtp_server.address) as client:
                client.send_message(outgoing)
            [message] = smtp_server.wait_for(1)
            assert b"=?utf-8?" in smtp_server.envelopes[0].content
            assert message["Subject"] == SUBJECT
            assert message.get_content() == "Schöne Grüße\\n"

        def test_raw_utf8_headers_with_smtputf8(smtp_server):
            raw = f"From: jörg@example.com\\r\\nSubject: {SUBJECT}\\r\\n\\r\\nÄpfel\\r\\n".encode()
            with smtplib.SMTP(*smtp_server.address) as client:
                client.sendmail("jörg@example.com", ["zoë@example.com"], raw,
                                mail_options=["SMTPUTF8"])
            [message] = smtp_server.wait_for(1)
            assert message["Subject"] == SUBJECT
            assert message["From"].addresses[0].username == "jörg"
            assert smtp_server.envelopes[0].smtputf8 is True
        """,
    )
    result.assert_outcomes(passed=2)


def test_the_pytest11_entry_point_loads_the_plugin(pytester, tmp_path, monkeypatch):
    """Install the entry point pyproject.toml declares, as pip would, and let pytest find it."""
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]["pytest11"]
    assert entry_points == {"fastsmtp": "fastsmtp.testing"}
    site = tmp_path / "site"
    dist_info = site / "fastsmtp_engine_entrypoint_check-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fastsmtp-engine-entrypoint-check\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(PACKAGE_ROOT)]))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(
        test_app="""
        def test_fixture_is_there(smtp_server):
            assert smtp_server.address[1] > 0
        """
    )
    result = pytester.runpytest_subprocess(*QUIET)
    result.assert_outcomes(passed=1)


def test_without_the_plugin_there_is_no_fixture(pytester):
    pytester.makepyfile(test_app="def test_x(smtp_server):\n    pass\n")
    result = pytester.runpytest("-p", "no:fastsmtp", *QUIET)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'smtp_server' not found*"])


def test_importing_fastsmtp_does_not_need_pytest():
    # A meta-path entry of None makes "import pytest" fail as if it were not installed.
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None\n"
        "sys.modules['_pytest'] = None\n"
        "import fastsmtp, fastsmtp.testing\n"
        "from fastsmtp.testing import SMTPTestServer, running\n"
        "import smtplib\n"
        "with SMTPTestServer() as server:\n"
        "    smtplib.SMTP(*server.address).sendmail('a@example.com', ['b@example.com'],\n"
        "                                           b'Subject: ok\\r\\n\\r\\n')\n"
        "    assert server.wait_for(1)[0]['Subject'] == 'ok'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    code = "import sys, fastsmtp; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


def test_the_server_works_without_pytest_as_a_context_manager():
    with SMTPTestServer(max_message_size=1024) as server, smtplib.SMTP(*server.address) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@example.com", ["b@example.com"], b"x" * 2000)
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: small\r\n\r\n")
        assert server.wait_for(1)[0]["Subject"] == "small"
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.address


def test_a_failure_needs_a_failure_reply():
    server = SMTPTestServer()
    with pytest.raises(ValueError, match="4xx or 5xx"):
        server.fail_next_rcpt(Reply(250, "2.0.0", "OK"))
