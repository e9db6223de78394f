"""Run code written for other SMTP libraries on fastsmtp.

``fastsmtp.compat.aiosmtpd`` runs aiosmtpd handlers unchanged: a project
switches by changing ``from aiosmtpd.controller import Controller`` to
``from fastsmtp.compat.aiosmtpd import Controller``.
"""

from __future__ import annotations

__all__: list[str] = []
