"""The operator's own list-and-watch caches of the jobs' pods and StatefulSets.

A burst of 1000 jobs makes tens of thousands of pod and StatefulSet events. Through kopf, each went through
its per-object worker, cause detection, an index handler and an on.event handler with their keyword
arguments and loggers: a third of the operator's CPU, taken from an API server on the same cores. Here an
event is a JSON line reduced at once to the small record the phase machine reads (controller.observe), kept
in an index by job, and the job is queued only when that record changed: a pod's binding or a StatefulSet's
revision bookkeeping changes nothing a decision reads.

The contract is the informer's, as client-go has it: list (paginated), then watch from the list's
resourceVersion with bookmarks; a watch that ends is resumed from the last version seen; a version the
API server no longer has (410 Gone) means a fresh list, and every job whose children differ from what was
known is queued. Caches are filled before the reconciler starts, so the first reconcile of a job after a
restart already sees all of its pods.
"""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..api import constants as c
from .kube import ApiException, Kube
from .objects import Key, job_key, key_of, owning_job_uid

log = logging.getLogger(__name__)

T = TypeVar("T")

LIST_PAGE = 500
WATCH_SECONDS = 300  # the API server ends each watch after this long; it is resumed from the last version
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
REDUCED = "rljob.dev/reduced"  # a listed object's digest carries its record under this key (not a Kubernetes field)


class ObservationIndex(Mapping[Key, tuple[T, ...]], Generic[T]):
    """Records by job key, one per object (by uid). Read by the reconciler as a mapping of key to records."""

    def __init__(self) -> None:
        self._by_key: dict[Key, dict[str, T]] = {}

    def __getitem__(self, key: Key) -> tuple[T, ...]:
        return tuple(self._by_key[key].values())

    def __iter__(self) -> Iterator[Key]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, key: Key, uid: str, record: T) -> bool:
        """Stores; True when the job's view changed (records compare without their resourceVersion)."""
        records = self._by_key.setdefault(key, {})
        old = records.get(uid)
        records[uid] = record
        return old != record

    def remove(self, key: Key, uid: str) -> bool:
        records = self._by_key.get(key)
        if records is None or records.pop(uid, None) is None:
            return False
        if not records:
            del self._by_key[key]
        return True


Reduce = Callable[[Mapping[str, Any]], "tuple[Key, T] | None"]


def namespace_matches(name: str, pattern: str) -> bool:
    """kopf's rule for a --namespace pattern (the flag keeps kopf's meaning), applied alike to the jobs' stream and
    their children's: comma-separated globs; the first one includes (`*` is assumed before a leading `!glob`); a
    later `!glob` excludes; a later inclusive glob re-includes only what the first one had included."""
    globs = [g.strip() for g in pattern.split(",")]
    if globs[0].startswith("!"):
        globs.insert(0, "*")
    first = fnmatch.fnmatch(name, globs[0])
    matched = first
    for glob in globs[1:]:
        if glob.startswith("!"):
            matched = matched and not fnmatch.fnmatch(name, glob[1:])
        elif first and fnmatch.fnmatch(name, glob):
            matched = True
    return matched


def is_pattern(namespace: str) -> bool:
    return any(ch in namespace for ch in "*?[!,")


@dataclass
class Scope:
    """One list-and-watch stream: a collection path, and what it last saw."""

    path: str
    version: str = ""
    members: dict[str, Key] = field(default_factory=dict)  # uid → job key, of the objects this stream holds


class Stream:
    """List-and-watch of one resource in the namespaces the operator serves; subclasses say what an event does."""

    def __init__(self, kube: Kube, prefix: str, plural: str, selector: str = "", namespaces: tuple[str, ...] = ()) -> None:
        self.kube, self.plural, self.selector = kube, plural, selector
        # Exact names: a stream per namespace (a Role there is enough); none or any pattern: one cluster-wide stream,
        # whose objects outside the patterns are left out.
        self.patterns = namespaces if any(is_pattern(ns) for ns in namespaces) else ()
        if namespaces and not self.patterns:
            self.scopes = [Scope(f"{prefix}/namespaces/{ns}/{plural}") for ns in dict.fromkeys(namespaces)]
        else:
            self.scopes = [Scope(f"{prefix}/{plural}")]
        self._tasks: list[asyncio.Task[None]] = []

    def serves(self, namespace: str) -> bool:
        return not self.patterns or any(namespace_matches(namespace, p) for p in self.patterns)

    def apply(self, scope: Scope, kind: str, obj: Mapping[str, Any]) -> Key | None:
        """One watch event; the job key whose view changed, if any."""
        raise NotImplementedError

    def handle(self, scope: Scope, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event, applied, and what follows the change of its job's view: what the watch does with each."""
        self._changed(self.apply(scope, kind, obj))

    def _changed(self, key: Key | None) -> None:
        """What follows a change of `key`'s view (nothing, here)."""

    def digest(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """What a list keeps of an object until the whole list is in: only what `apply` reads, so that listing again
        (after a 410, with thousands of pods) holds small records rather than every page of whole objects."""
        return obj

    def replace(self, scope: Scope, items: list[Mapping[str, Any]]) -> set[Key]:
        """A fresh list replaces what the stream held; the keys whose view changed. What is gone goes first: a job
        deleted and created again by the same name while the watch was away leaves its old uid, then comes back."""
        changed: set[Key] = set()
        listed = {(obj.get("metadata") or {}).get("uid") or "" for obj in items}
        for uid in [u for u in scope.members if u not in listed]:
            changed.add(self.apply(scope, "DELETED", {"metadata": {"uid": uid}}))  # type: ignore[arg-type]
        for obj in items:
            changed.add(self.apply(scope, "ADDED", obj))  # type: ignore[arg-type]
        changed.discard(None)  # type: ignore[arg-type]
        return changed

    # ── list and watch ────────────────────────────────────────────────────────────────────────

    async def _list(self, scope: Scope) -> None:
        items: list[Mapping[str, Any]] = []
        token = ""
        while True:
            query = [("labelSelector", self.selector)] if self.selector else []
            query.append(("limit", str(LIST_PAGE)))
            if token:
                query.append(("continue", token))
            try:
                page = await self.kube.request("GET", scope.path, query=query)
            except ApiException as exc:
                if exc.status == 410 and token:  # the continue token expired: from the start
                    items, token = [], ""
                    continue
                raise
            page_meta = page.get("metadata") or {}
            items += [self.digest(obj) for obj in page.get("items") or []]
            del page  # (a page of 500 whole pods is megabytes: not kept past its digest)
            meta = page_meta
            token = meta.get("continue") or ""
            if not token:
                scope.version = meta.get("resourceVersion") or ""
                break
        for key in self.replace(scope, items):
            self._changed(key)

    async def sync(self) -> None:
        """The first list of every stream (before the reconciler starts), then the watches in the background."""
        await asyncio.gather(*(self._list(scope) for scope in self.scopes))
        log.debug("%s: %d listed", self.plural, sum(len(s.members) for s in self.scopes))
        self.start()

    def start(self) -> None:
        """Follows every stream in the background: from its last list, or with a list first."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._follow(scope), name=f"rljob-watch-{scope.path}")
                           for scope in self.scopes]

    async def _follow(self, scope: Scope) -> None:
        """Watches for as long as the operator runs; lists again when the version is gone, retries on errors. A watch
        that ends at once with nothing in it, or a version gone again right after a list, waits before the next try."""
        delay, gone = RETRY_MIN_SECONDS, 0
        while True:
            try:
                if not scope.version:
                    await self._list(scope)
                began = time.monotonic()
                if await self._watch(scope) or time.monotonic() - began >= RETRY_MIN_SECONDS:
                    delay, gone = RETRY_MIN_SECONDS, 0
                    continue
                problem: object = "the watch ended at once"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status == 410:
                    log.info("watching %s: version %s is gone, listing again", scope.path, scope.version)
                    scope.version, gone = "", gone + 1
                    if gone == 1:
                        continue
                missing = isinstance(exc, ApiException) and exc.status == 404
                problem = "the API server does not serve this resource (is its CRD installed?)" if missing else exc
            log.warning("watching %s failed (again in %.0fs): %s", scope.path, delay, problem)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_SECONDS, delay * 2)

    async def _watch(self, scope: Scope) -> int:
        """One watch request, to its end; how many events it brought."""
        query = [("watch", "1"), ("resourceVersion", scope.version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(WATCH_SECONDS))]
        if self.selector:
            query.append(("labelSelector", self.selector))
        events = 0
        async for event in self.kube.watch(scope.path, query, read_timeout=WATCH_SECONDS + 30):
            events += 1
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                raise ApiException(int(code or 500), str(obj.get("reason") or ""), obj.get("message"))
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind != "BOOKMARK":
                self.handle(scope, kind, obj)
            if version:
                scope.version = version
        return events

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


class Informer(Stream, Generic[T]):
    """The jobs' pods (or StatefulSets, or Kueue Workloads): each reduced to its record, indexed by job."""

    def __init__(
        self,
        kube: Kube,
        prefix: str,
        plural: str,
        selector: str,
        reduce: Reduce[T],
        namespaces: tuple[str, ...] = (),
        on_change: Callable[[Key], None] | None = None,
    ) -> None:
        super().__init__(kube, prefix, plural, selector, namespaces)
        self.reduce = reduce
        self.index: ObservationIndex[T] = ObservationIndex()
        self.on_change = on_change

    def digest(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = obj.get("metadata") or {}
        reduced = self.reduce(obj) if self.serves(meta.get("namespace", "")) else None
        return {"metadata": {"uid": meta.get("uid") or ""}, REDUCED: reduced}

    def apply(self, scope: Scope, kind: str, obj: Mapping[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid") or ""
        if kind == "DELETED":
            key = scope.members.pop(uid, None)
            return key if key is not None and self.index.remove(key, uid) else None
        reduced = obj[REDUCED] if REDUCED in obj else self.reduce(obj) if self.serves(meta.get("namespace", "")) else None
        old = scope.members.get(uid)
        if reduced is None:  # its job label is gone (or it is not ours to serve): no longer a child of that job
            if old is not None:
                del scope.members[uid]
                return old if self.index.remove(old, uid) else None
            return None
        key, record = reduced
        if old is not None and old != key:
            self.index.remove(old, uid)
            self._changed(old)
        scope.members[uid] = key
        return key if self.index.put(key, uid, record) else None

    def _changed(self, key: Key | None) -> None:
        if key is not None and self.on_change is not None:
            self.on_change(key)


class JobFeed(Stream):
    """The jobs themselves, handed whole to the reconciler: every change of a job is a reason to decide again."""

    def __init__(
        self,
        kube: Kube,
        prefix: str,
        plural: str,
        on_upsert: Callable[[Mapping[str, Any]], None],
        on_delete: Callable[[Key, str | None], None],
        namespaces: tuple[str, ...] = (),
    ) -> None:
        super().__init__(kube, prefix, plural, "", namespaces)
        self.on_upsert, self.on_delete = on_upsert, on_delete

    def digest(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = obj.get("metadata") or {}
        if "managedFields" not in meta:
            return obj
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}

    def apply(self, scope: Scope, kind: str, obj: Mapping[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid") or ""
        if kind == "DELETED":
            key = scope.members.pop(uid, None)
            if key is not None:
                # The deleted instance's uid (its children may be released at once) only when the watch saw it go
                # without finalizers, as a plain (background) delete does. Deleted through them, its last state has a
                # deletionTimestamp (`kubectl delete --cascade=orphan` or `foreground`, or anyone's finalizer) and the
                # garbage collector alone decides what goes with it: orphaned children stay. Gone while the watch
                # was away (no last state, no name): the same.
                plain = bool(meta.get("name")) and not meta.get("deletionTimestamp")
                self.on_delete(key, uid if plain else None)
            return key
        if not self.serves(meta.get("namespace", "")):
            return None
        key = key_of(obj)
        scope.members[uid] = key
        self.on_upsert(obj)
        return key


class Departures(Stream):
    """One kind of the jobs' other children (the head Service, the NetworkPolicies), followed for its deletion and its
    presence. Each one deleted while its job lives is created again, as a controller keeps what it owns; a
    NetworkPolicy removed by hand would otherwise leave the job's pods unisolated until the job ends. What exists
    when the operator starts tells which went while it was not running. Nothing is kept of them but their job and
    name."""

    def __init__(
        self,
        kube: Kube,
        prefix: str,
        plural: str,
        kind: str,
        selector: str,
        on_gone: Callable[[Key, str | None, str], None],
        namespaces: tuple[str, ...] = (),
    ) -> None:
        super().__init__(kube, prefix, plural, selector, namespaces)
        self.kind, self.on_gone = kind, on_gone
        self.names: dict[str, str] = {}  # uid → name
        self._by_job: dict[Key, set[str]] = {}  # job → its children of this kind that exist ("NetworkPolicy x")

    def present(self, key: Key) -> set[str]:
        return self._by_job.get(key, set())

    def digest(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = obj.get("metadata") or {}
        kept = {k: meta.get(k) for k in ("uid", "name", "namespace")}
        kept["labels"] = {c.LABEL_JOB: (meta.get("labels") or {}).get(c.LABEL_JOB)}
        return {"metadata": kept}

    def _forget(self, key: Key | None, name: str) -> None:
        if key is not None and key in self._by_job:
            self._by_job[key].discard(f"{self.kind} {name}")
            if not self._by_job[key]:
                del self._by_job[key]

    def apply(self, scope: Scope, kind: str, obj: Mapping[str, Any]) -> Key | None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid") or ""
        if kind == "DELETED":
            key = scope.members.pop(uid, None)
            name = self.names.pop(uid, "")
            self._forget(key, name)
            if key is not None:
                # Gone while the watch was away (a fresh list no longer has it): no last state, no owner to check.
                owner = owning_job_uid(meta) if meta.get("name") else None
                self.on_gone(key, owner, f"{self.kind} {name}".strip())
            return None
        key = job_key(obj)
        if key is not None and self.serves(key[0]):
            scope.members[uid] = key
            self.names[uid] = meta.get("name", "")
            self._by_job.setdefault(key, set()).add(f"{self.kind} {self.names[uid]}")
        else:
            old = scope.members.pop(uid, None)
            self._forget(old, self.names.pop(uid, ""))
        return None
