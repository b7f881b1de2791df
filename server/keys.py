"""Typed keys for what the application holds (aiohttp AppKey)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from server.config import Config

if TYPE_CHECKING:
    from server.accounts import StaffAccounts
    from server.auth import StaffSessions
    from server.control_room import ControlRoom
    from server.db import Database
    from server.record import CaseRecordStore
    from server.sms import SmsGateway
    from signaling.endpoint import SignalingEndpoint
    from signaling.hub import Hub

CONFIG = web.AppKey("config", Config)
DB: web.AppKey[Database] = web.AppKey("db")
ACCOUNTS: web.AppKey[StaffAccounts] = web.AppKey("accounts")
STAFF_SESSIONS: web.AppKey[StaffSessions] = web.AppKey("staff_sessions")
HUB: web.AppKey[Hub] = web.AppKey("hub")
SMS: web.AppKey[SmsGateway] = web.AppKey("sms")
ROOM: web.AppKey[ControlRoom] = web.AppKey("room")
ENDPOINT: web.AppKey[SignalingEndpoint] = web.AppKey("endpoint")
RECORD: web.AppKey[CaseRecordStore] = web.AppKey("record")
