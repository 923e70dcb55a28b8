"""The engine: parse -> baseline -> features -> score -> policy -> signal, in batches.

:class:`Detector` is the one implementation behind the replay CLI, the
notebooks, the benchmarks and the stream workers. It is pure and synchronous:
state comes in as an :class:`EngineState` of immutable values and leaves as
new values written back into it.

Batching never changes a decision. Per entity, events are handled strictly in
input order (score, decide, then learn). A batch is processed speculatively:
every feature row is computed as if all earlier events were allowed (and so
learned with weight 1), each event kind is scored in one forest call, and then
decisions are made in input order; for an entity whose event is *not* allowed,
its later events in the batch are recomputed against the true baseline.
Cross-entity context (source IP, session) does not depend on decisions, so it
is computed first, in input order. Hence any chunking of a stream gives the
same decisions as one event at a time (a property test checks it).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, NamedTuple

import orjson

from detector import native as native_kernels
from detector.baseline import EMPTY, Baseline, signal_suppressed, update, with_signal
from detector.config import DetectorConfig
from detector.context import (
    IpContext,
    IpStats,
    SessionContext,
    session_live,
    session_opener,
    update_ip,
)
from detector.events import Event, EventKind
from detector.features import EventContext, FeatureExtractor
from detector.model import KindModel, Model
from detector.policy import Action, Policy, Reason, Verdict

#: One event kind's scorer: feature rows in, (raw scores, calibrated risks) out.
Scorer = Callable[[list[list[float]]], tuple[Sequence[float], Sequence[float]]]

_EMPTY_IP: Final = IpContext()
# Enum members bound to module names: class-attribute access on an Enum is slow
# in Python 3.11 and these are read on every event.
_AUTH: Final = EventKind.AUTH
_ALLOW: Final = Action.ALLOW


@dataclass
class EngineState:
    """Mutable container of immutable state values, keyed like the stream tables.

    ``baselines`` by entity key (``user:alice``), ``ips`` by source IP,
    ``sessions`` by session id. The stream adapter fills it from its tables
    before a batch and writes back the keys the batch touched.

    ``baselines`` is a ``dict`` by default; :meth:`Detector.new_state` gives
    a ``BaselineMap`` instead (the compiled table that holds baselines as
    Rust values, read back as equal ``Baseline`` values), on which the
    compiled engine updates baselines in place.
    """

    baselines: MutableMapping[str, Baseline] = field(default_factory=dict)
    ips: dict[str, IpContext] = field(default_factory=dict)
    sessions: dict[str, SessionContext] = field(default_factory=dict)


class Decision(NamedTuple):
    """The engine's verdict on one event (immutable)."""

    event: Event
    action: Action
    risk: float  # final risk in [0, 1], consistent with the action
    model_risk: float  # the forest's calibrated risk alone
    score: float  # raw anomaly score, higher = more anomalous
    reasons: tuple[Reason, ...]
    cold_start: bool
    learn_weight: float
    signal_id: str | None  # set when a signal is emitted (not deduplicated)
    model_version: str
    features: list[float] | None = None  # the feature row, when asked for

    @property
    def event_id(self) -> str:
        """Return the triggering event's id."""
        return self.event.event_id

    def to_dict(self) -> dict[str, Any]:
        """Return the decision record written by ``detector replay``.

        The first five fields are the documented contract
        (``event_id, entity, action, risk, reasons``); the rest extend it.
        """
        e = self.event
        return {
            "event_id": e.event_id,
            "entity": e.entity,
            "action": self.action.value,
            "risk": round(self.risk, 6),
            "reasons": [r.to_dict() for r in self.reasons],
            "entity_kind": e.entity_kind.value,
            "entity_class": e.entity_class.value,
            "kind": e.kind.value,
            "ts": e.ts_ms,
            "session_id": e.session_id,
            "model_risk": round(self.model_risk, 6),
            "score": round(self.score, 6),
            "cold_start": self.cold_start,
            "learned": self.learn_weight,
            "signal_id": self.signal_id,
            "model_version": self.model_version,
        }


_decision_encoder: Callable[[Decision], bytes | None] | None = None
_keyed_encoder: Callable[[list[Decision], Callable[[Decision], bytes]],
                         list[tuple[str, bytes]]] | None = None
_decision_encoder_bound = False


def use_native_decision_json(enabled: bool) -> bool:
    """Write decision records with the compiled encoder, or with orjson only.

    On by default (bound at the first :func:`decision_json` call, when the
    module is built); for tests and benchmarks that compare the two. Returns
    True when the compiled encoder is in use.
    """
    global _decision_encoder, _keyed_encoder, _decision_encoder_bound
    encoder = keyed = None
    if enabled:
        try:
            module = native_kernels.load()
        except native_kernels.NativeStale:  # the Detector reports a stale build
            module = None
        cls = getattr(module, "DecisionEncoder", None) if module is not None else None
        if cls is not None:
            compiled = cls()
            encoder, keyed = compiled.encode, getattr(compiled, "encode_keyed", None)
    _decision_encoder, _keyed_encoder, _decision_encoder_bound = encoder, keyed, True
    return encoder is not None


def decision_json(decision: Decision) -> bytes:
    """Return the decision record as JSON bytes, as ``orjson.dumps(decision.to_dict())``.

    The compiled encoder writes the same keys and values directly (floats
    with the same bits, in their shortest round-trip text, which may differ
    from orjson's); whatever it doubts goes through ``to_dict``.
    """
    if not _decision_encoder_bound:
        use_native_decision_json(True)
    if _decision_encoder is not None:
        out = _decision_encoder(decision)
        if out is not None:
            return out
    return _dumped(decision)


def _dumped(decision: Decision) -> bytes:
    """The decision record the Python way: ``orjson.dumps(decision.to_dict())``."""
    return orjson.dumps(decision.to_dict())


def keyed_decision_json(decisions: Sequence[Decision]) -> list[tuple[str, bytes]]:
    """Return ``(entity key, decision_json(d))`` for each decision: the decisions topic's records.

    One compiled call per batch when the encoder is built (the same bytes
    as :func:`decision_json`); per decision the Python way cost a property,
    a function call and a tuple, about 1 % of a draining worker's CPU.
    """
    if not _decision_encoder_bound:
        use_native_decision_json(True)
    if _keyed_encoder is not None:
        return _keyed_encoder(
            decisions if type(decisions) is list else list(decisions), _dumped)
    return [(d.event.entity_key, decision_json(d)) for d in decisions]


# Builds a Decision from a complete tuple of its fields, skipping the generated
# keyword-argument __new__ (a Python-level call with 11 arguments): the pass-2
# loop builds one per event. Give it every field, in order (a test checks).
_new_decision: Final = functools.partial(tuple.__new__, Decision)


def signal_id_for(event: Event, action: Action) -> str:
    """Return the deterministic signal id for ``action`` on ``event``.

    A redelivered event yields the same id, so consumers deduplicate retries.

    Examples
    --------
    >>> from detector.events import parse_event
    >>> e = parse_event(b'{"kind":"auth","id":"e1","ts":1000,"user":"ana"}')
    >>> signal_id_for(e, Action.REVOKE) == signal_id_for(e, Action.REVOKE)
    True
    """
    raw = f"{e_key(event)}|{event.event_id}|{action.value}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def e_key(event: Event) -> str:
    """Return the entity key of an event (``user:alice``)."""
    return event.entity_key


class Detector:
    """Scores and decides events against per-entity baselines.

    Parameters
    ----------
    model : a loaded :class:`~detector.model.Model`

    Examples
    --------
    >>> from detector.events import parse_event
    >>> from detector.model import load_model
    >>> det = Detector(load_model("models/default"))
    >>> e = parse_event(b'{"kind":"auth","id":"e1","ts":1767225600000,"user":"ana","ok":true,'
    ...                 b'"country":"US","ip":"198.51.100.7"}')
    >>> [d.action.value for d in det.process([e], EngineState())]
    ['allow']
    """

    def __init__(self, model: Model, native: bool | None = None) -> None:
        self.model = model
        self.cfg = model.cfg
        self.features = FeatureExtractor(model.cfg, dict(model.peers))
        self.policy = Policy(
            model.cfg, model.thresholds, {k: m.stats for k, m in model.kinds.items()}
        )
        self._peers = self.features.peers
        self._learn = {
            Action.ALLOW: 1.0,
            Action.STEP_UP: model.cfg.step_up_learn_weight,
            Action.REVOKE: 0.0,
        }
        # The pieces of the pipeline: Python's, each replaced below by its
        # compiled drop-in when detector._native has it (see detector.native).
        self._update: Callable[[Baseline, Event, DetectorConfig, float], Baseline] = update
        self._extract: Callable[[Event, Baseline, EventContext], list[float]] = (
            self.features.extract
        )
        self._scorers: dict[EventKind, Scorer] = {
            kind: _python_scorer(km) for kind, km in model.kinds.items()
        }
        self._verdict: Callable[..., Verdict] = self.policy.decide
        self._combine: Callable[..., list[EventContext]] = combine_context
        self._ip_stats_kernel: Any = None
        self._session_changes_kernel: Any = None
        self._process_kernel: Any = None
        self._bl_engine: Any = None
        self._baseline_map: type | None = None
        self.native = _native_module(native)
        if self.native is not None:
            self._use_native(self.native)

    @property
    def scorers(self) -> dict[EventKind, Scorer]:
        """Return the scorer of each event kind: the mapping the pipeline reads.

        A benchmark may replace entries in place (e.g. to time the model, or
        to take it out); every batch reads the current entry.
        """
        return self._scorers

    def _use_native(self, module: ModuleType) -> None:
        """Replace each piece that ``module`` compiles with its kernel."""
        self._update = native_kernels.update_kernel(module, self) or self._update
        self._extract = native_kernels.extract_kernel(module, self) or self._extract
        self._scorers = native_kernels.score_kernels(module, self) or self._scorers
        self._verdict = native_kernels.policy_kernel(module, self) or self._verdict
        self._combine = native_kernels.combine_kernel(module) or self._combine
        ctx = native_kernels.context_kernels(module, self)
        if ctx is not None:
            self._ip_stats_kernel, self._session_changes_kernel = ctx
        self._process_kernel = native_kernels.process_kernel(module, self)
        self._bl_engine = native_kernels.bl_engine(module, self)
        if self._bl_engine is not None:
            self._baseline_map = module.BaselineMap

    def new_state(self) -> EngineState:
        """Return an empty state for this detector: its fastest baseline table.

        With the compiled engine, baselines live in a ``BaselineMap`` (Rust
        values updated in place; reading one gives an equal ``Baseline``);
        otherwise in a ``dict``. Decisions are the same either way.
        """
        if self._baseline_map is not None:
            return EngineState(baselines=self._baseline_map())
        return EngineState()

    def ip_stats(
        self, events: Sequence[Event], ips: dict[str, IpContext]
    ) -> list[IpStats | None]:
        """Advance per-source-IP context over ``events`` (input order); return each one's stats.

        Depends only on the events of each IP, in order: a stream stage keyed
        by source IP computes exactly what a replay computes.
        """
        if self._ip_stats_kernel is not None:
            result: list[IpStats | None] = self._ip_stats_kernel(events, ips)
            return result
        cfg = self.cfg
        out: list[IpStats | None] = []
        for e in events:
            if e.kind is _AUTH and e.src_ip is not None:
                ctx = update_ip(ips.get(e.src_ip, _EMPTY_IP), e, cfg)
                ips[e.src_ip] = ctx
                out.append(ctx.stats(e.ts_ms, cfg.ip_window_s))
            else:
                out.append(None)
        return out

    def session_changes(
        self, events: Sequence[Event], sessions: dict[str, SessionContext]
    ) -> list[tuple[tuple[str, str, str], ...] | None]:
        """Advance per-session context over ``events``; return each one's changes.

        ``None`` for events without a trackable session, ``()`` for the event
        that opens a session or one that matches its opener.
        """
        if self._session_changes_kernel is not None:
            changes: list[tuple[tuple[str, str, str], ...] | None]
            changes = self._session_changes_kernel(events, sessions)
            return changes
        cfg = self.cfg
        out: list[tuple[tuple[str, str, str], ...] | None] = []
        for e in events:
            sid = e.session_id
            if sid is None or e.kind is not _AUTH:
                out.append(None)
                continue
            opener = sessions.get(sid)
            if opener is not None and session_live(opener, e, cfg):
                out.append(tuple(opener.changes(e)))
            else:
                sessions[sid] = session_opener(e)
                out.append(())
        return out

    def context(self, events: Sequence[Event], state: EngineState) -> list[EventContext]:
        """Compute each event's cross-entity context in input order, updating ``state``."""
        return self._combine(
            self.ip_stats(events, state.ips), self.session_changes(events, state.sessions)
        )

    def combine_context(
        self,
        ip: Sequence[IpStats | None],
        sessions: Sequence[tuple[tuple[str, str, str], ...] | None],
    ) -> list[EventContext]:
        """Return per-event contexts from the IP and session stages' outputs.

        The module's :func:`combine_context`, compiled when the kernels are built.
        """
        return self._combine(ip, sessions)

    def process(
        self,
        events: Sequence[Event],
        state: EngineState,
        keep_features: bool = False,
        contexts: Sequence[EventContext] | None = None,
    ) -> list[Decision]:
        """Decide every event of a batch; update ``state`` in place with new values.

        Parameters
        ----------
        events : the batch, in stream order
        state : baselines and contexts before the batch; holds the new values after
        keep_features : attach each event's feature row to its decision
        contexts : each event's cross-entity context when a previous stage
            computed it (a stream keyed by source IP, then by session);
            otherwise it is computed here from ``state.ips``/``state.sessions``

        Returns
        -------
        list of Decision
            One per event, in input order.
        """
        if not events:
            return []
        if contexts is None:
            contexts = self.context(events, state)
        elif len(contexts) != len(events):
            raise ValueError("one context per event is required")
        if self._baseline_map is not None and type(state.baselines) is self._baseline_map:
            # The compiled engine, one event at a time on the Rust-held
            # baselines; it asks _judge for the verdicts its gate cannot
            # prove "allow", and hands events it cannot model to _process_one.
            engine_decisions: list[Decision] = self._bl_engine.run(
                events, state.baselines, contexts, keep_features
            )
            return engine_decisions
        return self._process_with(events, state, keep_features, contexts)

    def _process_one(
        self, event: Event, baseline: Baseline | None, ctx: EventContext, keep_features: bool
    ) -> tuple[Decision, Baseline]:
        """Decide one event against ``baseline`` (None: a new entity); return it and the new one.

        The compiled engine's way back into the Python pipeline for an event
        it does not decide itself.
        """
        key = event.entity_key
        baselines: dict[str, Baseline] = {} if baseline is None else {key: baseline}
        decision = self._process_with([event], EngineState(baselines), keep_features, [ctx])[0]
        return decision, baselines[key]

    def _process_with(
        self,
        events: Sequence[Event],
        state: EngineState,
        keep_features: bool,
        contexts: Sequence[EventContext],
    ) -> list[Decision]:
        """The batch loop of :meth:`process` once the contexts are known."""
        if self._process_kernel is not None:
            # The compiled loop; None when the input needs this Python loop.
            kernel_decisions: list[Decision] | None = self._process_kernel(
                events, state, keep_features, contexts
            )
            if kernel_decisions is not None:
                return kernel_decisions
        cfg = self.cfg
        baselines = state.baselines
        n = len(events)

        # Pass 1, speculative: almost every event is allowed and learned with
        # weight 1, so compute every feature row as if all earlier events of
        # the batch were, and score each event kind in one forest call.
        keys = [e.entity_key for e in events]  # a property that builds a string: once
        before: list[Baseline] = []
        after: list[Baseline] = []
        rows: list[list[float]] = []
        current: dict[str, Baseline] = {}
        auth_idx: list[int] = []
        network_idx: list[int] = []
        extract = self._extract
        update_b = self._update
        for i, e in enumerate(events):
            key = keys[i]
            b = current.get(key)
            if b is None:
                b = baselines.get(key, EMPTY)
            before.append(b)
            rows.append(extract(e, b, contexts[i]))
            nb = update_b(b, e, cfg, 1.0)
            after.append(nb)
            current[key] = nb
            (auth_idx if e.kind is _AUTH else network_idx).append(i)
        by_kind = ((EventKind.AUTH, auth_idx), (EventKind.NETWORK, network_idx))
        scores = [0.0] * n
        risks = [0.0] * n
        for kind, idxs in by_kind:
            if not idxs:
                continue
            sc, rk = self._scorers[kind]([rows[i] for i in idxs])
            for i, s_, r_ in zip(idxs, sc, rk, strict=True):
                scores[i] = s_
                risks[i] = r_

        # Pass 2, in input order: decide. Where a decision is not "allow" the
        # speculation was wrong for that entity from there on, so its later
        # events in the batch are recomputed against the true baseline. The
        # result is exactly that of one event at a time.
        decisions: list[Decision] = []
        append = decisions.append
        diverged: dict[str, Baseline] = {}
        decide = self._verdict
        min_events = cfg.min_events
        peers = self._peers
        version = self.model.version
        for i, e in enumerate(events):
            key = keys[i]
            ctx = contexts[i]
            true_b = diverged.get(key) if diverged else None
            if true_b is None:
                b = before[i]
                row = rows[i]
                score, model_risk = scores[i], risks[i]
            else:
                b = true_b
                row = extract(e, b, ctx)
                sc, rk = self._scorers[e.kind]([row])
                score, model_risk = sc[0], rk[0]
            # FeatureExtractor.is_cold() and profile_for(), inlined (once per event).
            cold = b.n_learned < min_events
            prof = b
            if cold:
                peer = peers.get(e.entity_kind)
                if peer is not None:
                    prof = peer
            verdict = decide(e, row, model_risk, cold, ctx, b, prof)
            if verdict.action is _ALLOW and true_b is None:
                # The common case, inlined: the speculative update is the next
                # baseline, the risk is the model's, no signal (see _decide).
                current[key] = after[i]
                append(
                    _new_decision(
                        (e, _ALLOW, model_risk, model_risk, score, verdict.reasons, cold,
                         1.0, None, version, row if keep_features else None)
                    )
                )
                continue
            decision, new_b = self._decide(e, b, score, model_risk, verdict, cold)
            if true_b is not None or decision.action is not _ALLOW:
                diverged[key] = new_b
            current[key] = new_b
            append(decision if not keep_features else decision._replace(features=row))
        baselines.update(current)
        return decisions

    def _decide(
        self,
        e: Event,
        b: Baseline,
        score: float,
        model_risk: float,
        verdict: Verdict,
        cold: bool,
    ) -> tuple[Decision, Baseline]:
        """Return the decision for one scored event and the entity's next baseline.

        ``b`` is the entity's true baseline before the event; the event is
        learned into it with its action's weight.
        """
        cfg = self.cfg
        action = verdict.action
        weight = self._learn[action]
        signal_id = None
        risk = model_risk
        new_b = self._update(b, e, cfg, weight)
        if action is not _ALLOW:
            risk = self._escalated_risk(e, action, model_risk)
            level = action.level
            dedup_key = e.session_id or ""
            if not signal_suppressed(new_b, dedup_key, level, e.ts_ms, cfg.signal_dedup_window_s):
                signal_id = signal_id_for(e, action)
                new_b = with_signal(new_b, dedup_key, level, e.ts_ms, cfg.signal_dedup_window_s)
        decision = Decision(
            e,
            action,
            risk,
            model_risk,
            score,
            verdict.reasons,
            cold,
            weight,
            signal_id,
            self.model.version,
            None,
        )
        return decision, new_b

    def _escalated_risk(self, e: Event, action: Action, model_risk: float) -> float:
        """Return the risk of a step-up or revoke: the model's, at least the action's threshold."""
        step_thr, revoke_thr = self.policy.thresholds_for(e)
        floor = revoke_thr if action is Action.REVOKE else step_thr
        return max(model_risk, floor)

    def _judge(
        self,
        e: Event,
        b: Baseline | None,
        row: list[float],
        model_risk: float,
        cold: bool,
        ctx: EventContext,
    ) -> tuple[Action, tuple[Reason, ...], float, float, int, str, str | None, int]:
        """Decide, for the compiled engine, an event its policy gate could not prove allowed.

        The engine has scored the event against ``b``, the entity's baseline
        before it (None: a new entity). This asks the policy for the verdict
        and computes what :meth:`_decide` derives from it, except the two
        steps the engine does itself on its Rust-held baseline: the update
        with the learn weight, and the signal's dedup check and record. So
        the baseline is read once into Python and never written back.

        Returns ``(action, reasons, learn weight, risk, signal level, dedup
        key, signal id, dedup horizon in ms)``; for ``allow`` the last four
        are unused (no signal) and the risk is the model's.
        """
        base = EMPTY if b is None else b
        prof = base
        if cold:
            peer = self._peers.get(e.entity_kind)
            if peer is not None:
                prof = peer
        verdict = self._verdict(e, row, model_risk, cold, ctx, base, prof)
        action = verdict.action
        if action is _ALLOW:
            return action, verdict.reasons, 1.0, model_risk, 0, "", None, 0
        return (
            action,
            verdict.reasons,
            self._learn[action],
            self._escalated_risk(e, action, model_risk),
            action.level,
            e.session_id or "",
            signal_id_for(e, action),
            e.ts_ms - self.cfg.signal_dedup_window_s * 1000,
        )


_NO_CTX: Final = EventContext()

def _python_scorer(km: KindModel) -> Scorer:
    """Return ``km.score`` giving Python lists, the form the engine reads."""

    def score(rows: list[list[float]]) -> tuple[Sequence[float], Sequence[float]]:
        sc, rk = km.score(rows)
        return sc.tolist(), rk.tolist()

    return score


def _native_module(native: bool | None) -> ModuleType | None:
    """Return the compiled module to use: ``None`` for pure Python.

    ``native=None`` uses it when it is built, ``True`` requires it, ``False``
    runs the pure-Python core. A stale build raises either way.
    """
    if native is False:
        return None
    module = native_kernels.load()
    if module is None and native:
        raise native_kernels.NativeStale("detector._native is not built")
    return module


def combine_context(
    ip: Sequence[IpStats | None],
    sessions: Sequence[tuple[tuple[str, str, str], ...] | None],
) -> list[EventContext]:
    """Return per-event contexts from the IP and session stages' outputs."""
    return [
        _NO_CTX if a is None and b is None else EventContext(a, b)
        for a, b in zip(ip, sessions, strict=True)
    ]
