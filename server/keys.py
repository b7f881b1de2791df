"""Typed keys for what the application holds (aiohttp AppKey)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from server.config import Config

if TYPE_CHECKING:
    from server.accounts import StaffAccountStore
    from server.auth import StaffSessionStore
    from server.connections import ConnectionStats
    from server.control_room import ControlRoom
    from server.device_cookies import DeviceCookies
    from server.metrics import Metrics
    from server.record import CaseRecordStore
    from server.sms import SmsGateway
    from server.stores import Stores
    from signaling.endpoint import SignalingEndpoint
    from signaling.hub import Hub

CONFIG = web.AppKey("config", Config)
STORES: web.AppKey[Stores] = web.AppKey("stores")
ACCOUNTS: web.AppKey[StaffAccountStore] = web.AppKey("accounts")
STAFF_SESSIONS: web.AppKey[StaffSessionStore] = web.AppKey("staff_sessions")
HUB: web.AppKey[Hub] = web.AppKey("hub")
SMS: web.AppKey[SmsGateway] = web.AppKey("sms")
ROOM: web.AppKey[ControlRoom] = web.AppKey("room")
ENDPOINT: web.AppKey[SignalingEndpoint] = web.AppKey("endpoint")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CONNECTIONS: web.AppKey[ConnectionStats] = web.AppKey("connections")
RECORD: web.AppKey[CaseRecordStore] = web.AppKey("record")
DEVICE_COOKIES: web.AppKey[DeviceCookies] = web.AppKey("device_cookies")
