"""The server's side of the signalling core: who a `hello` admits and what `control` does."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.accounts import Staff, StaffRole
from server.auth import current_staff, same_origin
from server.caller_state import CAPTURE_KINDS, CAPTURE_STATES, MEDIA_STATES, RUNG_REASONS, RUNGS
from server.config import Config
from server.control_room import ControlRoom
from server.ice import ice_servers
from server.invites import LinkProblem, LinkRefused, secret_digest
from server.refusals import ControlRoomError
from signaling.hub import Knock
from signaling.participant import Admission, Participant, is_lobby, lobby_key
from signaling.protocol import Control, ErrorCode, Hello, ProtocolError, Role

LINK_ERRORS = {
    LinkProblem.ENDED: (ErrorCode.SESSION_ENDED, "this call has finished"),
    LinkProblem.EXPIRED: (ErrorCode.UNAUTHORIZED, "this credential has expired"),
}


CONTROL_ROOM_CODES = {
    "not_found": ErrorCode.NOT_FOUND,
    "forbidden": ErrorCode.FORBIDDEN,
    "sms_unavailable": ErrorCode.UNAVAILABLE,
}


class ControlRoomHooks:
    def __init__(self, config: Config, room: ControlRoom) -> None:
        self.config = config
        self.room = room
        # Participant ids of staff, to find the Staff behind a control message.
        self._staff: dict[str, Staff] = {}

    async def admit(self, request: web.Request, hello: Hello) -> Admission:
        if hello.credential is not None:
            return await self._admit_caller(hello)
        if not same_origin(request, self.config):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "connections from other sites are refused")
        staff_session = current_staff(request)
        if staff_session is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "sign in, or open your link again")
        staff = staff_session.staff
        if hello.session is None:
            return Admission(lobby_key(staff.id), _lobby_role(staff), staff.username,
                             staff.display_name, staff.id)
        session = await self.room.sessions.get(hello.session)
        if session is None or not await self.room.visible_to(staff, session):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such session")
        if session.ended:
            raise ProtocolError(ErrorCode.SESSION_ENDED, "this session has ended")
        role = await self.room.participant_role(staff, session)
        return Admission(session.id, role, staff.username, staff.display_name, staff.id)

    async def _admit_caller(self, hello: Hello) -> Admission:
        assert hello.credential is not None
        try:
            credential = await self.room.invites.check_credential(hello.credential)
        except LinkRefused as exc:
            held = await self._own_place(hello) if exc.problem is LinkProblem.ENDED else None
            if held is not None:
                # The caller in the call, reloading: a device refused at the door showed a copy
                # of this credential, which ended it, but this page proves its own place.
                return held
            code, message = LINK_ERRORS.get(
                exc.problem, (ErrorCode.UNAUTHORIZED, "this credential is not valid")
            )
            if exc.problem is LinkProblem.ENDED and not await self._session_ended(hello):
                # Ended by a newer or revoked link, or refused at the door: the call goes on.
                code, message = ErrorCode.UNAUTHORIZED, "this credential is no longer valid"
            raise ProtocolError(code, message) from exc
        if hello.session is not None and hello.session != credential.session_id:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "this credential is for another session")
        session = await self.room.sessions.get(credential.session_id)
        if session is None or session.ended:
            raise ProtocolError(ErrorCode.SESSION_ENDED, "this call has finished")
        return Admission(session.id, Role.VICTIM, "victim", "Caller",
                         credential=secret_digest(hello.credential))

    async def _own_place(self, hello: Hello) -> Admission | None:
        """The caller's admission if `hello.replaces` proves a live caller place that was let
        in with this very credential (its resume secret is the stronger proof)."""
        if hello.replaces is None or hello.credential is None:
            return None
        try:
            place = await self.room.hub.check_resume(hello.replaces.pid, hello.replaces.secret)
        except ProtocolError:
            return None
        if place.role is not Role.VICTIM or place.admission.credential != secret_digest(
                hello.credential):
            return None
        session = await self.room.sessions.get(place.session)
        if session is None or session.ended:
            return None
        return Admission(session.id, Role.VICTIM, "victim", "Caller",
                         credential=place.admission.credential)

    async def _session_ended(self, hello: Hello) -> bool:
        """Did the call of an ended credential finish (or is it unknown)?"""
        session_id = await self.room.invites.credential_session(hello.credential or "")
        session = await self.room.sessions.get(session_id) if session_id else None
        return session is None or session.ended

    async def welcome(self, request: web.Request, participant: Participant) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "ice_servers": ice_servers(
                self.config.stun_urls, self.config.turn_urls, self.config.turn_secret,
                participant.pid, self.config.turn_ttl,
            ),
            "resume_window": self.room.hub.resume_window,
            # The server's ping interval: a client pings at least as often, so that a dead
            # socket is found (and resumed) before the server gives up on it.
            "heartbeat": self.config.heartbeat,
        }
        if participant.admission.staff_id is not None:
            # Checked on every welcome, resumes included: a resume secret alone must not
            # outlive the staff member's sign-in.
            signed_in = current_staff(request)
            staff = await self.room.accounts.get(participant.admission.staff_id)
            if staff is None or signed_in is None or signed_in.staff.id != staff.id:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "sign in again to rejoin")
            self._staff[participant.pid] = staff
        if participant.role.is_staff and not is_lobby(participant.session):
            extra["status"] = await self.room.status(participant.session)
        elif participant.role is Role.VICTIM:
            session = await self.room.sessions.get(participant.session)
            # How the page should behave: on the phone line it sends no sound.
            extra["call"] = {"phone_line": session.phone_line if session else True,
                             "stills_every": self.config.still_every}
        return extra

    async def joined(self, participant: Participant, resumed: bool) -> None:
        if is_lobby(participant.session):
            staff = self._staff.get(participant.pid)
            if staff is not None and staff.role is StaffRole.SPECIALIST and not resumed:
                # A specialist who reconnects still hears invitations that ring for them.
                for invitation in await self.room.invitations.ringing_for(staff.id):
                    session = await self.room.sessions.get(invitation.session_id)
                    await self.room.hub.deliver(participant, {
                        "type": "invitation", "op": "ringing", "invitation": invitation.id,
                        "session": invitation.session_id, "since": invitation.created_at,
                        "expires_at": invitation.expires_at,
                        "incident_ref": session.incident_ref if session else "",
                    })
            return
        if participant.role is Role.HANDLER:
            # A reloaded console still sees a device waiting at the door.
            await self.room.tell_waiting(participant)
        if participant.role is Role.VICTIM and not resumed:
            await self.room.victim_joined(participant.session)
        else:
            if not resumed:
                await self.room.note(participant.session, "participant_joined",
                                     role=participant.role.value,
                                     staff=participant.admission.staff_id)
            await self.room.push_status(participant.session)

    async def left(self, participant: Participant, reason: str) -> None:
        self._staff.pop(participant.pid, None)
        if not is_lobby(participant.session):
            await self.room.note(participant.session, "participant_left",
                                 role=participant.role.value, staff=participant.admission.staff_id,
                                 reason=reason)

    async def knocked(self, knock: Knock) -> None:
        await self.room.device_waiting(knock)

    async def withdrawn(self, knock: Knock) -> None:
        await self.room.device_withdrawn(knock)

    async def said(self, participant: Participant, message: dict[str, Any]) -> None:
        """Chat, advice and location go into the encrypted record, never into the logs."""
        body = {k: v for k, v in message.items() if k not in ("type", "from", "name", "cid")}
        body["staff"] = participant.admission.staff_id
        await self.room.note(participant.session, message["type"], **body)

    async def control(self, participant: Participant, control: Control) -> None:
        staff = self._staff.get(participant.pid)
        op, args = control.op, control.args
        try:
            if op == "media":
                await self._media(participant, args)
            elif op == "consent":
                await self._consent(participant, args)
            elif op == "capture":
                await self._capture(participant, args)
            elif op == "rung":
                await self._rung(participant, args)
            elif op in ("end", "invite_specialist", "cancel_specialist", "resend_link",
                        "revoke_link", "call_mode", "caller_media", "admit_device",
                        "refuse_device"):
                handler = self._require(staff, participant, Role.HANDLER, op)
                await self._handler_op(handler, participant.session, op, args)
            elif op in ("accept", "decline", "available"):
                specialist = self._require_specialist(staff, op)
                await self._specialist_op(specialist, op, args)
            else:
                raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown control op {op[:32]!r}")
        except ControlRoomError as exc:
            code = CONTROL_ROOM_CODES.get(exc.code, ErrorCode.CONFLICT)
            raise ProtocolError(code, exc.message, detail=exc.code) from exc

    @staticmethod
    def _require(staff: Staff | None, participant: Participant, role: Role, op: str) -> Staff:
        if staff is None or participant.role is not role or is_lobby(participant.session):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only the handler in the session can {op}")
        return staff

    @staticmethod
    def _require_specialist(staff: Staff | None, op: str) -> Staff:
        if staff is None or staff.role is not StaffRole.SPECIALIST:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only a specialist can {op}")
        return staff

    async def _handler_op(self, handler: Staff, session_id: str, op: str,
                          args: dict[str, Any]) -> None:
        if op == "end":
            reason = args.get("reason", "ended")
            await self.room.end_session(handler, session_id, reason if isinstance(reason, str)
                                        else "ended")
        elif op == "invite_specialist":
            username = args.get("username")
            if username is not None and not isinstance(username, str):
                raise ProtocolError(ErrorCode.BAD_FIELD, "username: must be a string")
            await self.room.invite_specialist(handler, session_id, username)
        elif op == "cancel_specialist":
            await self.room.cancel_specialist(handler, session_id)
        elif op == "resend_link":
            await self.room.send_link(handler, session_id, keep_caller=_keep_caller(args))
        elif op == "revoke_link":
            await self.room.revoke_link(handler, session_id, keep_caller=_keep_caller(args))
        elif op in ("admit_device", "refuse_device"):
            device = args.get("device")
            if not isinstance(device, str) or not 0 < len(device) <= 64:
                raise ProtocolError(ErrorCode.BAD_FIELD, "device: must be a waiting device's id")
            await self.room.decide_device(handler, session_id, device,
                                          admit=op == "admit_device")
        elif op == "call_mode":
            phone_line = args.get("phone_line")
            if not isinstance(phone_line, bool):
                raise ProtocolError(ErrorCode.BAD_FIELD, "phone_line: must be true or false")
            await self.room.set_call_mode(handler, session_id, phone_line)
        elif op == "caller_media":
            state = args.get("state")
            if state not in MEDIA_STATES:
                raise ProtocolError(ErrorCode.BAD_FIELD,
                                    f"state: one of {', '.join(MEDIA_STATES)}")
            await self.room.caller_media_seen(session_id, state, handler.id)

    async def _specialist_op(self, specialist: Staff, op: str, args: dict[str, Any]) -> None:
        if op == "available":
            value = args.get("value")
            if not isinstance(value, bool):
                raise ProtocolError(ErrorCode.BAD_FIELD, "value: must be true or false")
            await self.room.set_available(specialist, value)
            return
        invitation = args.get("invitation")
        if not isinstance(invitation, str) or len(invitation) > 64:
            raise ProtocolError(ErrorCode.BAD_FIELD, "invitation: must be an invitation id")
        await self.room.answer_invitation(specialist, invitation, accept=op == "accept")

    async def _consent(self, participant: Participant, args: dict[str, Any]) -> None:
        """The caller says what they agreed to share; it goes on the case record."""
        if participant.role is not Role.VICTIM or is_lobby(participant.session):
            raise ProtocolError(ErrorCode.FORBIDDEN, "only the caller gives consent")
        kinds = ("camera", "microphone", "location")
        if set(args) != set(kinds) or not all(isinstance(args[k], bool) for k in kinds):
            raise ProtocolError(ErrorCode.BAD_FIELD,
                                "consent: camera, microphone and location, each true or false")
        await self.room.note(participant.session, "consent_given", **{k: args[k] for k in kinds})

    @staticmethod
    def _require_caller(participant: Participant, what: str) -> None:
        if participant.role is not Role.VICTIM or is_lobby(participant.session):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only the caller reports {what}")

    async def _capture(self, participant: Participant, args: dict[str, Any]) -> None:
        """What the caller's phone lets the page capture; the handler is told what is missing."""
        self._require_caller(participant, "capture")
        if set(args) != set(CAPTURE_KINDS) or not all(
            args[kind] in CAPTURE_STATES for kind in CAPTURE_KINDS
        ):
            raise ProtocolError(ErrorCode.BAD_FIELD, "capture: camera, microphone and location, "
                                f"each one of {', '.join(CAPTURE_STATES)}")
        await self.room.caller_capture(participant.session, {k: args[k] for k in CAPTURE_KINDS})

    async def _rung(self, participant: Participant, args: dict[str, Any]) -> None:
        """The caller's page moved on the fallback ladder."""
        self._require_caller(participant, "the rung")
        rung, reason = args.get("rung"), args.get("reason")
        if rung not in RUNGS:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"rung: one of {', '.join(RUNGS)}")
        if reason is not None and reason not in RUNG_REASONS:
            raise ProtocolError(ErrorCode.BAD_FIELD,
                                f"reason: null or one of {', '.join(RUNG_REASONS)}")
        await self.room.caller_rung(participant.session, rung, reason)

    async def _media(self, participant: Participant, args: dict[str, Any]) -> None:
        state = args.get("state")
        if state not in ("connected", "disconnected", "failed"):
            raise ProtocolError(ErrorCode.BAD_FIELD, "state: connected, disconnected or failed")
        peer = args.get("peer")
        target = await self.room.hub.lookup(peer) if isinstance(peer, str) else None
        if target is None or target.session != participant.session:
            raise ProtocolError(ErrorCode.UNKNOWN_PEER, "no such peer in your session")
        if state == "connected" and Role.VICTIM in (participant.role, target.role) \
                and Role.HANDLER in (participant.role, target.role):
            await self.room.media_connected(participant.session)


def _keep_caller(args: dict[str, Any]) -> bool:
    keep = args.get("keep_caller", False)
    if not isinstance(keep, bool):
        raise ProtocolError(ErrorCode.BAD_FIELD, "keep_caller: must be true or false")
    return keep


def _lobby_role(staff: Staff) -> Role:
    return Role.SPECIALIST if staff.role is StaffRole.SPECIALIST else (
        Role.HANDLER if staff.role is StaffRole.HANDLER else Role.OBSERVER
    )
