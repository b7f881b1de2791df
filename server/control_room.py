"""The control room: what staff and callers do to sessions, in one place.

HTTP handlers and the signalling hooks both call this, so a session behaves the same whether
it was ended from the console's button or over the socket. It keeps the Hub told: every
change is pushed to the session's staff as a `status` message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from server.accounts import Staff, StaffAccountStore, StaffRole
from server.caller_state import CALLER_FACTS, CAPTURE_KINDS, caller_summary, capture_facts
from server.case_notes import CaseNotes, forms_for
from server.config import Config
from server.contacts import ContactHistory, PhoneLinkKey, summarise_history
from server.invites import Credential, Invite, InviteStore, LinkProblem, LinkRefused
from server.phone import masked, normalise_mobile
from server.record import CaseRecordError, CaseRecordStore
from server.refusals import ControlRoomError
from server.risk.assessment import MARAC_REPEAT_CONTACTS
from server.sessions import IllegalTransition, SessionState, VideoSession, VideoSessionStore
from server.sms import SmsError, SmsGateway, SmsMessage, render_sms
from server.specialists import InvitationState, InvitationStore, SpecialistInvitation
from signaling.hub import ADMIT, Hub, Knock
from signaling.participant import Participant, lobby_key
from signaling.protocol import ErrorCode, ProtocolError, Role

log = logging.getLogger("erv.control_room")

STAFF_PARTICIPANTS = (Role.HANDLER, Role.SPECIALIST, Role.OBSERVER)
RING_GRACE = 2.0  # seconds past a ring's end before another node's sweep times it out



class ControlRoom:
    def __init__(
        self,
        config: Config,
        accounts: StaffAccountStore,
        sessions: VideoSessionStore,
        invites: InviteStore,
        invitations: InvitationStore,
        sms: SmsGateway,
        hub: Hub,
        record: CaseRecordStore | None = None,
        link_key: PhoneLinkKey | None = None,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.sessions = sessions
        self.invites = invites
        self.invitations = invitations
        self.sms = sms
        self.hub = hub
        self.record = record
        self.link_key = link_key
        self.case_notes = CaseNotes(record, forms_for(config.data_dir))
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def note(self, session_id: str, kind: str, **body: Any) -> None:
        """Write an event to the session's case record (awaited: acknowledged means stored)."""
        if self.record is not None:
            await self.record.append(session_id, kind, body)

    # -- who may do what ---------------------------------------------------------------------

    async def visible_to(self, staff: Staff, session: VideoSession) -> bool:
        if staff.role in (StaffRole.SUPERVISOR, StaffRole.AUDITOR):
            return True
        if staff.role is StaffRole.HANDLER:
            return session.handler_id == staff.id
        if staff.role is StaffRole.SPECIALIST:
            # Only while asked (ringing) or once accepted: a specialist who declined, let
            # the ring time out or was cancelled has no part in the case (decision 39).
            if await self.invitations.has_accepted(session.id, staff.id):
                return True
            latest = await self.invitations.latest(session.id)
            return (latest is not None and latest.specialist_id == staff.id
                    and latest.state is InvitationState.RINGING)
        return False

    async def specialist_sessions(self, specialist: Staff) -> list[VideoSession]:
        """The sessions a specialist's list shows: those they may still see (decision 39)."""
        return [s for s in await self.sessions.for_specialist(specialist.id)
                if await self.visible_to(specialist, s)]

    async def session_for(self, staff: Staff, session_id: str) -> VideoSession:
        session = await self.sessions.get(session_id) if len(session_id) <= 64 else None
        if session is None or not await self.visible_to(staff, session):
            # Not found and not yours look the same: ids are not for guessing.
            raise ControlRoomError("not_found", "No such session.", 404)
        return session

    async def own_session(self, handler: Staff, session_id: str) -> VideoSession:
        session = await self.session_for(handler, session_id)
        if handler.role is not StaffRole.HANDLER or session.handler_id != handler.id:
            raise ControlRoomError("forbidden", "Only the session's handler can do this.", 403)
        return session

    async def participant_role(self, staff: Staff, session: VideoSession) -> Role:
        if staff.role is StaffRole.HANDLER and session.handler_id == staff.id:
            return Role.HANDLER
        if staff.role is StaffRole.SPECIALIST and await self.invitations.has_accepted(
            session.id, staff.id
        ):
            return Role.SPECIALIST
        if staff.role is StaffRole.SUPERVISOR:
            return Role.OBSERVER
        raise ProtocolError(ErrorCode.FORBIDDEN, "you are not part of this session")

    # -- sessions and links ------------------------------------------------------------------

    async def create_session(
        self, handler: Staff, incident_ref: str, phone: str, language: str = "en",
        phone_line: bool = True, send_link: bool = True,
    ) -> VideoSession:
        if handler.role is not StaffRole.HANDLER:
            raise ControlRoomError("forbidden", "Only call handlers create sessions.", 403)
        number = normalise_mobile(phone)
        # The sessions table keeps only the masked number; the number itself lives in the
        # encrypted case record, so a copy of the database does not give it away and
        # crypto-shredding the session destroys it.
        shown = masked(number) if self.record is not None else number
        link = self.link_key.link(number) if self.link_key is not None else None
        session = await self.sessions.create(incident_ref, shown, handler.id, language, link,
                                             phone_line)
        await self.note(session.id, "session_created", incident_ref=session.incident_ref,
                        handler=handler.id, language=language, phone=number,
                        phone_line=phone_line)
        log.info("session %s created by staff %d", session.id, handler.id)
        if send_link:  # without: the handler sees the history first and texts no one yet
            await self.send_link(handler, session.id)
        fresh = await self.sessions.get(session.id)
        assert fresh is not None
        return fresh

    async def send_link(self, handler: Staff, session_id: str, keep_caller: bool = False) -> (
        Invite
    ):
        """Text the caller a new link (revoking any earlier one, and ending the credentials
        redeemed from earlier links unless `keep_caller` keeps the caller in the call)."""
        session = await self.own_session(handler, session_id)
        if session.ended:
            raise ControlRoomError("ended", "This session has ended.")
        invite, token = await self.invites.issue(session.id)
        await self._end_credentials(handler, session.id, keep_caller, "new_link")
        link = f"{self.config.public_url}/j/{token}"
        body = render_sms(self.config.sms_template, link, max(1, self.config.invite_ttl // 60))
        try:
            receipt = await self.sms.send(
                SmsMessage(await self._caller_number(session), body, invite.id, session.id)
            )
        except SmsError as exc:
            log.warning("sms for invite %s failed: %s", invite.id, exc.code)
            await self.invites.record_sms(invite.id, self.sms.name, None, "failed", exc.code)
            await self.note(session.id, "invite_sent", invite=invite.id, gateway=self.sms.name,
                            status="failed", error=exc.code)
            await self.push_status(session.id)
            raise ControlRoomError(
                exc.code, "The text message could not be sent. Try again, or read the caller "
                "the link another way.", 502,
            ) from exc
        await self.invites.record_sms(invite.id, receipt.gateway, receipt.message_id,
                                      receipt.status)
        await self.note(session.id, "invite_sent", invite=invite.id, gateway=receipt.gateway,
                        status=receipt.status, by=handler.id)
        if session.state is SessionState.CREATED:
            await self.sessions.advance(session.id, SessionState.INVITED)
        log.info("invite %s sent for session %s via %s", invite.id, session.id, receipt.gateway)
        await self.push_status(session.id)
        fresh = await self.invites.get(invite.id)
        assert fresh is not None
        return fresh

    async def _caller_number(self, session: VideoSession) -> str:
        if self.record is None:
            return session.phone
        for event in await self.record.read(session.id):
            if event.header.kind == "session_created" and isinstance(event.body.get("phone"), str):
                return str(event.body["phone"])
        raise ControlRoomError("no_number", "The caller's number is no longer held.", 409)

    async def revoke_link(self, handler: Staff, session_id: str, keep_caller: bool = False) -> (
        None
    ):
        session = await self.own_session(handler, session_id)
        await self.invites.revoke(session.id, "revoked")
        await self.note(session.id, "invite_revoked", by=handler.id)
        log.info("invite revoked for session %s", session.id)
        if not session.ended:
            await self._end_credentials(handler, session.id, keep_caller, "revoked")
        await self.push_status(session.id)

    async def _end_credentials(self, handler: Staff, session_id: str, keep_caller: bool,
                               why: str) -> None:
        """A new or revoked link ends every credential redeemed from earlier links, and the
        sockets and waiting devices that hold one; `keep_caller` keeps the credential of the
        caller in the call (decision 37)."""
        keep = await self.hub.caller_credentials(session_id) if keep_caller else frozenset()
        count = await self.invites.end_credentials(session_id, keep)
        closed = await self.hub.end_callers(session_id, keep, "credential_ended")
        for knock in await self.hub.knocks(session_id):
            if knock.credential not in keep and await self.hub.answer_knock(
                    session_id, knock.id, "credential_ended"):
                await self._device_answered(knock, "ended")
        if count or closed:
            await self.note(session_id, "credentials_ended", count=count, sockets=closed,
                            kept=bool(keep), why=why, by=handler.id)
            log.info("session %s: %d caller credentials ended (%s)", session_id, count, why)

    # -- a second device joining as the caller (decision 38) ---------------------------------

    async def device_waiting(self, knock: Knock) -> None:
        await self.note(knock.session, "caller_device_waiting", device=knock.id)
        log.info("session %s: device %s waits to join as the caller", knock.session, knock.id)
        await self.hub.broadcast(knock.session, {"type": "caller_device", "op": "waiting",
                                                 **knock.describe()}, roles=(Role.HANDLER,))

    async def device_withdrawn(self, knock: Knock) -> None:
        await self._device_answered(knock, "withdrawn")

    async def tell_waiting(self, participant: Participant) -> None:
        for knock in await self.hub.knocks(participant.session):
            await self.hub.deliver(participant, {"type": "caller_device", "op": "waiting",
                                                 **knock.describe()})

    async def decide_device(self, handler: Staff, session_id: str, device: str, *,
                            admit: bool) -> None:
        """The handler lets the waiting device in (the device in the call is replaced) or
        refuses it (its socket closes and its credential ends)."""
        session = await self.own_session(handler, session_id)
        knock = await self.hub.answer_knock(session.id, device, ADMIT if admit else "refused")
        if knock is None:
            raise ControlRoomError("not_found", "That device is no longer waiting.", 404)
        if not admit:
            await self.invites.end_credential(knock.credential)
        await self._device_answered(knock, "admitted" if admit else "refused", handler.id)

    async def _device_answered(self, knock: Knock, outcome: str,
                               by: int | None = None) -> None:
        await self.note(knock.session, f"caller_device_{outcome}", device=knock.id, by=by)
        log.info("session %s: waiting device %s %s", knock.session, knock.id, outcome)
        await self.hub.broadcast(knock.session, {"type": "caller_device", "op": outcome,
                                                 "device": knock.id}, roles=(Role.HANDLER,))

    async def open_link(self, token: str) -> Invite:
        """The GET of a link: record the opening, use nothing up."""
        invite = await self.invites.look(token)
        await self._reach_or_refuse(invite.session_id, SessionState.OPENED)
        await self.note(invite.session_id, "invite_opened", invite=invite.id)
        await self.push_status(invite.session_id)
        return invite

    async def redeem_link(self, token: str) -> Credential:
        """The caller's tap: the link becomes a credential for this one session."""
        # Refuse early if the session already ended, before using the link up.
        invite = await self.invites.look(token)
        session = await self.sessions.get(invite.session_id)
        if session is None or session.ended:
            raise LinkRefused(LinkProblem.ENDED)
        _, credential = await self.invites.redeem(token)
        await self._reach_or_refuse(credential.session_id, SessionState.OPENED)
        await self.note(credential.session_id, "invite_redeemed", invite=invite.id)
        log.info("invite %s redeemed", invite.id)
        await self.push_status(credential.session_id)
        return credential

    async def _reach_or_refuse(self, session_id: str, state: SessionState) -> None:
        try:
            await self.sessions.reach(session_id, state)
        except IllegalTransition as exc:
            raise LinkRefused(LinkProblem.ENDED) from exc

    async def sms_delivery(self, message_id: str, status: str) -> None:
        invite = await self.invites.record_delivery(message_id, status)
        if invite is not None:
            log.info("invite %s sms status %s", invite.id, status)
            await self.push_status(invite.session_id)

    async def victim_joined(self, session_id: str) -> None:
        try:
            await self.sessions.reach(session_id, SessionState.JOINED)
        except IllegalTransition:
            return  # ended as the caller joined: the end sends the caller's socket bye ended
        # A fresh page: what the last one reported no longer holds; the new one reports anew
        # (its first frames are read only after this: the hook runs on its own socket's task).
        await self.sessions.update_facts(session_id, dict.fromkeys(CALLER_FACTS))
        await self.note(session_id, "participant_joined", role="victim")
        await self.push_status(session_id)

    # -- the caller's media: the phone line, the ladder, what arrives -------------------------

    async def set_call_mode(self, handler: Staff, session_id: str, phone_line: bool) -> None:
        """Keep the caller on the 999 phone line (video and location only), or switch the
        call to full sound on the page. The caller's page is told at once."""
        session = await self.own_session(handler, session_id)
        if session.ended:
            raise ControlRoomError("ended", "This session has ended.")
        if session.phone_line == phone_line:
            return
        await self.sessions.set_phone_line(session.id, phone_line)
        await self.note(session.id, "call_mode_changed", phone_line=phone_line, by=handler.id)
        log.info("session %s call mode: %s", session.id,
                 "phone line" if phone_line else "full sound")
        await self.hub.broadcast(session.id, {"type": "call_mode", "phone_line": phone_line},
                                 roles=(Role.VICTIM,))
        await self.push_status(session.id)

    async def caller_rung(self, session_id: str, rung: str, reason: str | None) -> None:
        """The caller's page moved on the fallback ladder (validated by the caller)."""
        session = await self.sessions.get(session_id)
        if session is None or session.ended:
            return
        if session.facts.get("rung") == rung and session.facts.get("rung_reason") == reason:
            return
        await self.sessions.update_facts(session_id, {"rung": rung, "rung_reason": reason})
        await self.note(session_id, "rung_changed", rung=rung, reason=reason,
                        previous=session.facts.get("rung"))
        log.info("session %s caller rung %s (%s)", session_id, rung, reason or "-")
        await self.push_status(session_id)

    async def caller_capture(self, session_id: str, states: dict[str, str]) -> None:
        """What the caller's phone lets the page capture, as the page last found it."""
        session = await self.sessions.get(session_id)
        if session is None or session.ended:
            return
        facts = capture_facts(states)
        if all(session.facts.get(k) == v for k, v in facts.items()):
            return
        await self.sessions.update_facts(session_id, facts)
        await self.note(session_id, "capture_changed",
                        **{kind: states[kind] for kind in CAPTURE_KINDS if kind in states})
        await self.push_status(session_id)

    async def caller_media_seen(self, session_id: str, state: str, handler_id: int) -> None:
        """The handler's page says what arrives from the caller (frames, sound)."""
        session = await self.sessions.get(session_id)
        if session is None or session.ended or session.facts.get("media") == state:
            return
        await self.sessions.update_facts(session_id, {"media": state, "media_since": time.time()})
        await self.note(session_id, "caller_media_changed", state=state, by=handler_id,
                        previous=session.facts.get("media"))
        await self.push_status(session_id)

    async def caller(self, session: VideoSession) -> dict[str, Any]:
        """The caller's state in one word and its parts (server.caller_state)."""
        roster = [] if session.ended else await self.hub.roster(session.id)
        return caller_summary(session.facts, roster, ended=session.ended,
                              joined_before=session.joined_at is not None)

    async def media_connected(self, session_id: str) -> None:
        session = await self.sessions.get(session_id)
        if session is not None and session.state is SessionState.JOINED:
            try:
                await self.sessions.advance(session_id, SessionState.CONNECTED)
            except IllegalTransition:
                return  # both ends reported it at once; the other report won
            since = session.invited_at or session.created_at
            await self.note(session_id, "media_connected",
                            seconds_from_invite=round(time.time() - since, 1))
            await self.push_status(session_id)

    async def end_session(self, staff: Staff, session_id: str, reason: str = "ended") -> (
        VideoSession
    ):
        session = await self.own_session(staff, session_id)
        if session.ended:
            return session
        reason = reason if reason in END_REASONS else "ended"
        try:
            session = await self.sessions.advance(session.id, SessionState.ENDED, reason)
        except IllegalTransition:
            fresh = await self.sessions.get(session.id)
            assert fresh is not None
            return fresh
        await self.note(session.id, "session_ended", reason=reason, by=staff.id,
                        duration=round((session.ended_at or time.time()) - session.created_at))
        await self.invites.revoke(session.id, "ended")
        for invitation in await self.invitations.cancel_session(session.id):
            self._stop_timer(invitation.id)
            await self._tell_specialist(invitation, "cancelled")
        count = await self.hub.end_session(session.id, "session_ended")
        log.info("session %s ended (%s) by staff %d; %d sockets closed", session.id, reason,
                 staff.id, count)
        return session

    # -- specialists -------------------------------------------------------------------------

    async def is_online(self, staff_id: int) -> bool:
        """Has a desk socket connected now (one that dropped, even if resumable, rings no one)."""
        return await self.hub.online(lobby_key(staff_id))

    async def set_available(self, staff: Staff, available: bool) -> None:
        if staff.role is not StaffRole.SPECIALIST:
            raise ControlRoomError("forbidden", "Only specialists set availability.", 403)
        await self.accounts.set_available(staff.id, available)
        log.info("specialist %d is %savailable", staff.id, "" if available else "not ")

    async def available_specialists(self) -> list[Staff]:
        return [
            s for s in await self.accounts.available_specialists() if await self.is_online(s.id)
        ]

    async def invite_specialist(
        self, handler: Staff, session_id: str, username: str | None = None
    ) -> SpecialistInvitation:
        session = await self.own_session(handler, session_id)
        if session.ended:
            raise ControlRoomError("ended", "This session has ended.")
        available = await self.available_specialists()
        if username:
            chosen = next((s for s in available if s.username == username.strip().lower()), None)
            if chosen is None:
                raise ControlRoomError(
                    "specialist_unavailable", "That specialist is not available right now."
                )
        else:
            tried = await self.invitations.tried(session.id)
            chosen = next((s for s in available if s.id not in tried), None)
            if chosen is None:
                raise ControlRoomError(
                    "no_specialist", "No specialist is available right now."
                )
        # Only one invitation rings per session: stop the earlier one, and tell its specialist.
        for earlier in await self.invitations.cancel_session(session.id):
            self._stop_timer(earlier.id)
            await self._tell_specialist(earlier, "cancelled")
        invitation = await self.invitations.ring(session.id, chosen.id, handler.id)
        loop = asyncio.get_running_loop()
        self._timers[invitation.id] = loop.call_later(
            self.config.specialist_ring, self._spawn_time_out, invitation.id
        )
        await self._tell_specialist(invitation, "ringing", session)
        await self.note(session.id, "specialist_invited", invitation=invitation.id,
                        specialist=chosen.id, by=handler.id)
        log.info("specialist %d invited to session %s", chosen.id, session.id)
        await self.push_status(session.id)
        return invitation

    async def cancel_specialist(self, handler: Staff, session_id: str) -> None:
        session = await self.own_session(handler, session_id)
        for invitation in await self.invitations.cancel_session(session.id):
            self._stop_timer(invitation.id)
            await self._tell_specialist(invitation, "cancelled")
        await self.push_status(session.id)

    async def answer_invitation(
        self, specialist: Staff, invitation_id: str, accept: bool
    ) -> SpecialistInvitation:
        if specialist.role is not StaffRole.SPECIALIST:
            raise ControlRoomError("forbidden", "Only specialists answer invitations.", 403)
        state = InvitationState.ACCEPTED if accept else InvitationState.DECLINED
        invitation = await self.invitations.answer(invitation_id, specialist.id, state)
        if invitation is None:
            raise ControlRoomError(
                "not_ringing", "This invitation is no longer open.", 409
            )
        self._stop_timer(invitation.id)
        await self._tell_specialist(invitation, state.value)
        await self.note(invitation.session_id, f"specialist_{state.value}",
                        invitation=invitation.id, specialist=specialist.id)
        log.info("specialist %d %s invitation %s", specialist.id, state.value, invitation.id)
        await self.push_status(invitation.session_id)
        return invitation

    async def _time_out(self, invitation_id: str) -> None:
        self._timers.pop(invitation_id, None)
        if await self.invitations.finish(invitation_id, InvitationState.TIMED_OUT):
            invitation = await self.invitations.get(invitation_id)
            assert invitation is not None
            await self._tell_specialist(invitation, "timed_out")
            await self.note(invitation.session_id, "specialist_timed_out",
                            invitation=invitation.id, specialist=invitation.specialist_id)
            log.info("invitation %s timed out", invitation_id)
            await self.push_status(invitation.session_id)

    async def time_out_overdue(self, grace: float = RING_GRACE) -> int:
        """Time out invitations still ringing `grace` seconds after their ring ended: the
        node whose timer should have done it may have died. Any node may run this; `finish`
        lets exactly one of them tell the specialist and the handler."""
        count = 0
        for invitation in await self.invitations.overdue(time.time() - grace):
            self._stop_timer(invitation.id)
            await self._time_out(invitation.id)
            count += 1
        return count

    def _stop_timer(self, invitation_id: str) -> None:
        timer = self._timers.pop(invitation_id, None)
        if timer is not None:
            timer.cancel()

    def _spawn_time_out(self, invitation_id: str) -> None:
        # The coroutine is made only when the timer fires, so a cancelled timer leaves none.
        task = asyncio.get_running_loop().create_task(self._time_out(invitation_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell_specialist(
        self, invitation: SpecialistInvitation, op: str, session: VideoSession | None = None
    ) -> None:
        message: dict[str, Any] = {
            "type": "invitation", "op": op, "invitation": invitation.id,
            "session": invitation.session_id, "since": invitation.created_at,
            "expires_at": invitation.expires_at,
        }
        if session is not None:
            message["incident_ref"] = session.incident_ref
        await self.hub.broadcast(lobby_key(invitation.specialist_id), message)

    # -- status ------------------------------------------------------------------------------

    async def status(self, session_id: str) -> dict[str, Any]:
        session = await self.sessions.get(session_id)
        if session is None:
            return {}
        invite = await self.invites.latest(session_id)
        invitation = await self.invitations.latest(session_id)
        specialist: dict[str, Any] | None = None
        if invitation is not None:
            person = await self.accounts.get(invitation.specialist_id)
            specialist = {
                "invitation": invitation.id,
                "state": invitation.state.value,
                "name": person.display_name if person else "",
                "since": invitation.created_at,
                "expires_at": invitation.expires_at,
            }
        return {
            "session": {
                "id": session.id,
                "state": session.state.value,
                "incident_ref": session.incident_ref,
                "language": session.language,
                "timeline": session.timeline(),
                "end_reason": session.end_reason,
            },
            "call": {"phone_line": session.phone_line},
            "caller": await self.caller(session),
            "invite": None if invite is None else {
                "id": invite.id,
                "state": invite.link_state(),
                "sms_status": invite.sms_status,
                "sms_error": invite.sms_error,
                "expires_at": invite.expires_at,
            },
            "specialist": specialist,
        }

    # -- contact history: facts for whoever sees the session, details where needed ---------

    async def history(self, staff: Staff, session: VideoSession, via: str) -> dict[str, Any]:
        """Earlier contacts from the same number, so no call is treated in isolation: facts
        only (counts, dates, the last band and whether it was lowered, MARAC, the kinds of
        open referrals), never notes, agencies or safe call times. The lookup is written to
        the record first (decision 40)."""
        summary, earlier = await self._history_summary(session)
        await self._note_lookup(staff, session, via, earlier, details=False)
        last = summary.last_banded
        return {
            "contacts_12_months": summary.contacts_12_months,
            "total_contacts": summary.total_contacts,
            "repeat_contact": summary.repeat_contact,
            "last_contact": earlier[0].created_at if earlier else None,
            "last_band": summary.last_band.value if summary.last_band else None,
            "last_band_at": summary.last_band_at.timestamp() if summary.last_band_at else None,
            "last_band_downgraded": bool(last and last.band_downgraded),
            "last_band_lowered_from": (
                last.band_lowered_from.value if last and last.band_lowered_from else None
            ),
            "last_band_by": (
                last.band_by_role.capitalize() if last and last.band_by_role else None
            ),
            "open_referrals": [
                {"kind": r.kind.value, "status": r.status.value} for r in summary.open_referrals
            ],
            "marac_12_months": summary.marac_12_months,
            # This contact makes enough in 12 months for MARAC to be suggested.
            "marac_repeat_contacts": summary.contacts_12_months + 1 >= MARAC_REPEAT_CONTACTS,
        }

    async def history_details(self, staff: Staff, session_id: str) -> dict[str, Any]:
        """Each earlier contact's band (with a lowering's reason) and referrals in full
        (notes, agency, safe call times): for a supervisor, or a specialist who accepted
        this session; not for handlers, who get the facts (decision 40)."""
        session = await self.session_for(staff, session_id)
        if staff.role not in (StaffRole.SUPERVISOR, StaffRole.SPECIALIST):
            raise ControlRoomError(
                "forbidden", "Contact history details are for supervisors and the session's "
                "specialist.", 403,
            )
        await self._accepted_if_specialist(staff, session)
        earlier = await self.sessions.earlier_contacts(session.id)
        await self._note_lookup(staff, session, "api", earlier, details=True)
        contacts = []
        for other in earlier:
            prior = await self.case_notes.prior_contact(other)
            contacts.append({
                "session": other.id,
                "incident_ref": other.incident_ref,
                "started_at": other.created_at,
                "band": prior.risk_band.value if prior.risk_band else None,
                "band_at": prior.risk_assessed_at.timestamp() if prior.risk_assessed_at else None,
                "band_downgraded": prior.band_downgraded,
                "band_lowered_from": (
                    prior.band_lowered_from.value if prior.band_lowered_from else None
                ),
                "band_reason": prior.band_reason,
                "band_by": prior.band_by_role,
                "referrals": [r.to_dict() for r in prior.referrals],
            })
        return {"session": session.id, "contacts": contacts}

    async def _note_lookup(self, staff: Staff, session: VideoSession, via: str,
                           earlier: list[VideoSession], *, details: bool) -> None:
        """DPA 2018 s.62: who consulted which records, when (the event's time) and why (the
        session looked from, with its incident reference). Written to this session's record
        before anything is shown, and to each consulted session's record too."""
        if self.record is None:
            return
        consulted = [s.id for s in earlier]
        await self.record.append(session.id, "history_consulted", {
            "by": staff.id, "by_role": staff.role.value, "via": via, "details": details,
            "sessions": consulted})
        for other in consulted:
            try:
                await self.record.append(other, "history_consulted", {
                    "by": staff.id, "by_role": staff.role.value, "via": via,
                    "details": details, "for_session": session.id})
            except CaseRecordError:
                pass  # a shredded earlier record holds nothing more to protect

    async def _history_summary(
        self, session: VideoSession
    ) -> tuple[ContactHistory, list[VideoSession]]:
        """Earlier sessions' bands and referrals come from their (encrypted) records."""
        earlier = await self.sessions.earlier_contacts(session.id)
        prior = [await self.case_notes.prior_contact(s) for s in earlier]
        summary = summarise_history(prior, datetime.fromtimestamp(session.created_at, UTC))
        return summary, earlier

    # -- case notes: risk assessments and referral outcomes ------------------------------------

    async def _accepted_if_specialist(self, staff: Staff, session: VideoSession) -> None:
        """Case notes and history details are for a specialist who accepted, not one who is
        only being rung (who sees the session so as to decide) or who said no."""
        if staff.role is StaffRole.SPECIALIST and not await self.invitations.has_accepted(
            session.id, staff.id
        ):
            raise ControlRoomError("not_found", "No such session.", 404)

    async def _case_session(self, staff: Staff, session_id: str) -> VideoSession:
        """The session, if `staff` may write its case notes: its handler or a specialist
        who accepted the invitation (during the call or after it); one still being rung,
        or who declined or timed out, may not."""
        if staff.role not in (StaffRole.HANDLER, StaffRole.SPECIALIST):
            raise ControlRoomError(
                "forbidden", "Only the session's handler or specialist can do this.", 403
            )
        session = await self.session_for(staff, session_id)
        await self._accepted_if_specialist(staff, session)
        return session

    async def assess_risk(
        self, staff: Staff, session_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Score a questionnaire against the previous contact's band and store it."""
        session = await self._case_session(staff, session_id)
        summary, _ = await self._history_summary(session)
        return await self.case_notes.assess(
            session.id, staff, body, summary.last_band, summary.contacts_12_months
        )

    async def add_referral(
        self, staff: Staff, session_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        session = await self._case_session(staff, session_id)
        return await self.case_notes.add_referral(session.id, staff, body)

    async def case(self, staff: Staff, session_id: str) -> dict[str, Any]:
        """The session's latest assessment and its referrals; a supervisor's or auditor's
        reading is itself written to the record."""
        session = await self.session_for(staff, session_id)
        await self._accepted_if_specialist(staff, session)
        case = await self.case_notes.case(session.id)
        if staff.role in (StaffRole.SUPERVISOR, StaffRole.AUDITOR):
            await self.case_notes.note_read(session.id, staff)
        band = case["band"]
        if band["by"] is not None:  # who lowered (or set) the band, by name as well as id
            person = await self.accounts.get(band["by"])
            band["by_name"] = person.display_name if person else f"staff #{band['by']}"
        return case

    async def push_status(self, session_id: str) -> None:
        if not await self.hub.occupied(session_id):
            return
        status = await self.status(session_id)
        await self.hub.broadcast(session_id, {"type": "status", **status}, roles=STAFF_PARTICIPANTS)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()


END_REASONS = frozenset({"ended", "resolved", "caller_safe", "no_response", "other"})


def now() -> float:
    return time.time()
