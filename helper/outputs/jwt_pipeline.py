"""JWT-SVIDs and JWT bundles: Workload API in, validated files on disk out.

One `JWTPipeline` per helper, a pipeline (helper.features.Pipeline) the core creates when
`jwt_svids` or `jwt_bundle_file_name` is set, as it creates the X.509 one:

- the FetchJWTBundles stream is watched (re-opened and retried as the X.509 stream is);
  every message is validated (`helper.identity.jwks`), kept in memory to validate JWT-SVIDs, and
  written to `jwt_bundle_file_name` in the Go helper's format when that is set;
- each `jwt_svids` entry is fetched with FetchJWTSVID for ``[jwt_audience,
  *jwt_extra_audiences]``, every returned token is validated against those bundles
  (`helper.identity.jwt`), `hint` picks one, and the raw token is written. It is fetched again at
  half its remaining lifetime (the Go helper's rule, plus 1 s, never later than 3/4 of it);
  failures are retried after 1 s, doubling to 60 s. If the token on disk expires before a
  renewal succeeds, the file is removed and its write status becomes "failed" (health goes
  bad): an expired token is never left looking valid.

JWT writes are not reported to the features (the Go helper does not signal the child for them
either: a token refresh every few minutes must not reload a daemon).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from helper._proto import workload_pb2
from helper.config import Config, JWTSVIDConfig
from helper.errors import Refused, WriteError
from helper.features import PipelineEvents
from helper.identity.jwks import JWTBundle, parse_jwt_bundles
from helper.identity.jwt import JWTSVID, select_jwt_svid, unverified_expiry, validate_jwt_svid
from helper.identity.spiffeid import shown
from helper.ops.status import FAILED, UNWRITTEN, WRITTEN, Status
from helper.outputs.formats import jwt_bundle_file_json
from helper.outputs.pem import OutputFile
from helper.outputs.preflight import cannot_heal
from helper.outputs.writer import AtomicWriter, read_regular
from helper.tasks import run_all, run_until_first
from helper.workload.backoff import Backoff, workload_api_backoff
from helper.workload.client import RefusedMessage, WorkloadAPIError, WorkloadClient, watch

log = logging.getLogger("spiffe_helper.jwt")

PIPELINE = "jwt"
MAX_TOKEN_FILE_BYTES = 64 * 1024


def jwt_retry_backoff() -> Backoff:
    """The Go helper's JWT-SVID retry policy: 1 s, doubling, capped at 60 s, no jitter."""
    return Backoff(initial=1.0, cap=60.0, factor=2.0, jitter=0.0)


MAX_REFRESH_DELAY = 24 * 3600.0


def refresh_delay(expiry: datetime, now: datetime) -> float:
    """Seconds until the next fetch: half the remaining lifetime plus 1 s (Go's rule),
    but never later than 3/4 of the remaining lifetime (short-lived tokens) nor a day."""
    remaining = (expiry - now).total_seconds()
    return max(0.0, min(remaining / 2 + 1.0, remaining * 0.75, MAX_REFRESH_DELAY))


class JWTPipeline:
    """The JWT bundle watcher and one `JWTSVIDFetcher` per `jwt_svids` entry."""

    name = PIPELINE

    def __init__(self, cfg: Config, writer: AtomicWriter, status: Status,
                 events: PipelineEvents) -> None:
        self.cfg = cfg
        self.writer = writer
        self.status = status
        self.events = events
        self._previous: Config | None = None  # the config before set_config, until rewrite
        self.bundles: dict[str, JWTBundle] | None = None
        self._bundles_ready: asyncio.Event | None = None
        self._bundle_file_done: asyncio.Event | None = None
        self.bundle_path = cfg.output_path(cfg.jwt_bundle_file_name) \
            if cfg.jwt_bundle_file_name else None
        self.fetchers = [JWTSVIDFetcher(entry, self) for entry in cfg.jwt_svids]
        self._unwritten = {f.path for f in self.fetchers}
        if self.bundle_path is not None:
            self._unwritten.add(self.bundle_path)
        for path in self._unwritten:  # the Go helper's health keys: path.Join(cert_dir, name)
            status.jwt_write_status.setdefault(str(path), UNWRITTEN)
        # daemon mode: the task of each fetcher, while the pipeline runs
        self._tasks: dict[JWTSVIDFetcher, asyncio.Task[None]] | None = None
        self._tasks_changed = asyncio.Event()
        self.retired = False  # turned off by a reload: nothing is written any more

    # --- a reload ---------------------------------------------------------------------

    def set_config(self, cfg: Config) -> None:
        """`cfg` in force; `rewrite` brings the outputs in line with it."""
        if self._previous is None:
            self._previous = self.cfg
        self.cfg = cfg

    async def rewrite(self) -> None:
        """Bring the JWT outputs in line with the config in force at once: the bundle
        file and the kept tokens written again (names, modes, owner), new entries
        fetched, the files of removed entries removed."""
        old_cfg, new = self._previous or self.cfg, self.cfg
        self._previous = None
        bundle_path = new.output_path(new.jwt_bundle_file_name) \
            if new.jwt_bundle_file_name else None
        if bundle_path != self.bundle_path:
            if self.bundle_path is not None:
                await self._forget(self.bundle_path)
            self.bundle_path = bundle_path
            if bundle_path is not None:
                self.status.jwt_write_status[str(bundle_path)] = UNWRITTEN
        if self.bundle_path is not None and self.bundles is not None:
            await self._write_bundle_file(self.bundles)
        current = {f.identity: f for f in self.fetchers}
        fetchers: list[JWTSVIDFetcher] = []
        restart: list[JWTSVIDFetcher] = []
        for entry in new.jwt_svids:
            fetcher = current.pop(JWTSVIDFetcher.identity_of(entry, new), None)
            if fetcher is None:
                fetcher = JWTSVIDFetcher(entry, self)
                self.status.jwt_write_status[fetcher.key] = UNWRITTEN
                restart.append(fetcher)
            else:
                fetcher.entry, fetcher.cfg = entry, new
                if new.hint != old_cfg.hint:
                    restart.append(fetcher)  # another token may be the one to write
                else:
                    await fetcher.rewrite()
            fetchers.append(fetcher)
        self.fetchers = fetchers
        for gone in current.values():
            await self._stop_task(gone)
            self.status.jwt_expiry.pop(gone.entry.jwt_audience, None)
            if gone.path not in {f.path for f in fetchers} and gone.path != self.bundle_path:
                await self._forget(gone.path)
        if self._tasks is not None:
            for fetcher in restart:
                await self._stop_task(fetcher)
            self._tasks_changed.set()

    async def retire(self) -> None:
        """The JWT outputs were turned off: remove their files and health entries."""
        self.retired = True
        for fetcher in self.fetchers:
            await self._stop_task(fetcher)
        paths = [f.path for f in self.fetchers]
        if self.bundle_path is not None:
            paths.append(self.bundle_path)
        for fetcher in self.fetchers:
            self.status.jwt_expiry.pop(fetcher.entry.jwt_audience, None)
        for path in paths:
            await self._forget(path)

    async def _forget(self, path: Path) -> None:
        """An output no longer configured: its file removed, its health entry dropped."""
        self.status.jwt_write_status.pop(str(path), None)
        self._unwritten.discard(path)
        try:
            await asyncio.to_thread(self.writer.remove, [path])
        except WriteError as exc:
            log.error("%s is no longer configured but cannot be removed: %s", path, exc)
            return
        log.info("%s is no longer configured: removed", path)

    async def _stop_task(self, fetcher: JWTSVIDFetcher) -> None:
        task = self._tasks.pop(fetcher, None) if self._tasks is not None else None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run_fetchers(self, client: WorkloadClient) -> None:
        """Daemon mode: every fetcher in a task of its own, as a reload adds or removes
        them. A final Workload API error of one ends the pipeline."""
        self._tasks = {}
        try:
            while True:
                for fetcher in self.fetchers:
                    if fetcher not in self._tasks:
                        self._tasks[fetcher] = asyncio.ensure_future(
                            fetcher.run(client, once=False))
                self._tasks_changed.clear()
                changed = asyncio.ensure_future(self._tasks_changed.wait())
                try:
                    done, _ = await asyncio.wait({changed, *self._tasks.values()},
                                                return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                for task in done:
                    if task is not changed and not task.cancelled():
                        task.result()  # a final WorkloadAPIError ends the pipeline
                        # a fetcher never returns in daemon mode; if it did, restart it
                        for fetcher, running in list(self._tasks.items()):
                            if running is task:
                                del self._tasks[fetcher]
        finally:
            tasks, self._tasks = list(self._tasks.values()), None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- the pipeline -----------------------------------------------------------------

    async def run(self, client: WorkloadClient, *, once: bool) -> None:
        """Watch bundles and keep every JWT-SVID fresh (once: until each is written)."""
        self._bundles_ready = asyncio.Event()
        self._bundle_file_done = asyncio.Event()
        if self.bundles is not None:
            self._bundles_ready.set()
        if once:
            await run_until_first(self.watch_bundles(client), self._write_all_once(client))
        else:
            await run_until_first(self.watch_bundles(client), self._run_fetchers(client))

    async def _write_all_once(self, client: WorkloadClient) -> None:
        await run_all(self._bundle_file_written(), *(f.run(client, once=True)
                                                     for f in self.fetchers))

    async def _bundle_file_written(self) -> None:
        assert self._bundle_file_done is not None
        if self.bundle_path is not None and self.bundle_path in self._unwritten:
            await self._bundle_file_done.wait()

    async def wait_bundles(self) -> dict[str, JWTBundle]:
        """The current bundles; waits for the first."""
        assert self._bundles_ready is not None
        await self._bundles_ready.wait()
        assert self.bundles is not None
        return self.bundles

    async def watch_bundles(self, client: WorkloadClient) -> None:
        backoff = workload_api_backoff()

        def on_retry(error: WorkloadAPIError | None, delay: float) -> None:
            self.status.reconnects += 1
            if isinstance(error, RefusedMessage):  # logged once by watch()
                self.status.refused[error.rule] += 1
            if error is not None:
                self.status.last_error = f"workload API: {error}"

        messages = watch(client.jwt_bundle_stream, backoff=backoff,
                         what=f"JWT bundle stream from {client.address}", on_retry=on_retry)
        async for message in messages:
            try:
                bundles = parse_jwt_bundles(dict(message.bundles))
            except Refused as exc:
                self.status.refused[exc.rule] += 1
                self.status.last_error = f"refused JWT bundles: {exc}"
                log.error("refused JWT bundle message (rule %s): %s; previous bundles kept",
                          exc.rule, exc.detail)
                continue
            backoff.reset()
            for bundle in bundles.values():
                for reason in bundle.skipped:
                    log.debug("ignored a key: %s", reason)
            log.info("JWT bundles: %s", ", ".join(
                f"{td} ({len(b.keys)} key(s))" for td, b in sorted(bundles.items())) or "none")
            self.bundles = bundles
            assert self._bundles_ready is not None
            self._bundles_ready.set()
            if self.bundle_path is not None:
                await self._write_bundle_file(bundles)

    async def _write_bundle_file(self, bundles: dict[str, JWTBundle]) -> None:
        assert self.bundle_path is not None
        if self.retired:
            return
        file = OutputFile(self.bundle_path, jwt_bundle_file_json(bundles),
                          self.cfg.jwt_bundle_file_mode, secret=False)
        key = str(self.bundle_path)
        try:
            changed = await asyncio.to_thread(self.writer.write_set, [file])
        except WriteError as exc:
            self.status.jwt_write_status[key] = FAILED
            self.status.write_failures += 1
            self.status.last_error = str(exc)
            log.error("writing the JWT bundle failed: %s; previous file left in place", exc)
            return
        self.status.jwt_write_status[key] = WRITTEN
        if changed:
            log.info("JWT bundle file %s updated", self.bundle_path)
        assert self._bundle_file_done is not None
        self._bundle_file_done.set()
        await self.written(self.bundle_path)

    async def written(self, path: Path) -> None:
        """Note the first write of `path`; after the last one, report the pipeline written."""
        if path not in self._unwritten:
            return
        self._unwritten.discard(path)
        if not self._unwritten:
            await self.events.first_write()


class JWTSVIDFetcher:
    """Keeps one `jwt_svids` entry's token file fresh."""

    def __init__(self, entry: JWTSVIDConfig, outputs: JWTPipeline) -> None:
        self.entry = entry
        self.outputs = outputs
        self.cfg = outputs.cfg
        self.status = outputs.status
        self.path = outputs.cfg.output_path(entry.jwt_svid_file_name)
        self.audience = [entry.jwt_audience, *entry.jwt_extra_audiences]
        self.expiry: datetime | None = None  # of the token on disk
        self.token: str | None = None  # the token this helper wrote, for a rewrite
        self.backoff = jwt_retry_backoff()
        # a write and a reload's rewrite never interleave (a stale token never wins)
        self.lock = asyncio.Lock()
        self.fatal: WriteError | None = None

    @staticmethod
    def identity_of(entry: JWTSVIDConfig, cfg: Config) -> tuple[Path, tuple[str, ...]]:
        """What makes a `jwt_svids` entry the same across a reload: its file and audiences."""
        return (cfg.output_path(entry.jwt_svid_file_name),
                (entry.jwt_audience, *entry.jwt_extra_audiences))

    @property
    def identity(self) -> tuple[Path, tuple[str, ...]]:
        return self.identity_of(self.entry, self.cfg)

    @property
    def key(self) -> str:
        return str(self.path)

    async def rewrite(self) -> None:
        """Write the current token again with the settings in force (mode, owner)."""
        async with self.lock:
            if self.token is None or self.expiry is None or self.expiry <= _now():
                return
            try:
                await asyncio.to_thread(self.outputs.writer.write_set, [OutputFile(
                    self.path, self.token.encode("ascii"), self.cfg.jwt_svid_file_mode,
                    secret=True)])
            except WriteError as exc:
                self.status.jwt_write_status[self.key] = FAILED
                self.status.write_failures += 1
                self.status.last_error = str(exc)
                log.error("writing the JWT-SVID again failed: %s", exc)

    async def run(self, client: WorkloadClient, *, once: bool) -> None:
        await asyncio.to_thread(self._forget_expired_token_on_disk)
        while True:
            svid = await self._renew(client)
            if once and svid is None and self.fatal is not None:
                raise self.fatal  # one-shot: retrying cannot fix it (helper.outputs.preflight)
            if svid is not None:
                if once:
                    return
                await self._sleep_watching_expiry(refresh_delay(svid.expiry, _now()))
                continue
            delay = self.backoff.next_delay()
            log.warning("JWT-SVID for audience %s: retrying in %.0f s",
                        shown(self.entry.jwt_audience), delay)
            await self._sleep_watching_expiry(delay)

    async def _renew(self, client: WorkloadClient) -> JWTSVID | None:
        """Fetch, validate and write once; the SVID written, or None after a failure
        (counted and logged). Final Workload API errors are raised."""
        aud = shown(self.entry.jwt_audience)
        try:
            response = await client.fetch_jwt_svid(self.audience)
            bundles = await self.outputs.wait_bundles()
            svid = self._validate(response.svids, bundles)
            async with self.lock:
                changed = await asyncio.to_thread(self.outputs.writer.write_set, [OutputFile(
                    self.path, svid.token.encode("ascii"), self.cfg.jwt_svid_file_mode,
                    secret=True)])
                self.token = svid.token
        except WorkloadAPIError as exc:
            if exc.final:
                raise
            self.status.last_error = f"workload API: {exc}"
            if isinstance(exc, RefusedMessage):
                self.status.refused[exc.rule] += 1
                log.error("refused JWT-SVID answer for audience %s (rule %s): %s", aud,
                          exc.rule, exc.details)
            else:
                log.error("fetching the JWT-SVID for audience %s failed: %s", aud, exc)
            return None
        except Refused as exc:
            self.status.refused[exc.rule] += 1
            self.status.last_error = f"refused JWT-SVID: {exc}"
            if exc.rule == "hint_not_found":  # as the Go helper: a failed write (503)
                self.status.jwt_write_status[self.key] = FAILED
            log.error("refused JWT-SVID for audience %s (rule %s): %s", aud, exc.rule,
                      exc.detail)
            return None
        except WriteError as exc:
            self.status.jwt_write_status[self.key] = FAILED
            self.status.write_failures += 1
            self.status.last_error = str(exc)
            self.fatal = exc if cannot_heal(exc) else None
            log.error("writing the JWT-SVID failed: %s", exc)
            return None
        self.backoff.reset()
        self.expiry = svid.expiry
        self.status.jwt_write_status[self.key] = WRITTEN
        self.status.jwt_expiry[self.entry.jwt_audience] = svid.expiry
        log.info("JWT-SVID %s for audience %s (expires %s) %s %s", svid.spiffe_id, aud,
                 svid.expiry.isoformat(), "written to" if changed else "unchanged in", self.path)
        await self.outputs.written(self.path)
        return svid

    def _validate(self, svids: Iterable[workload_pb2.JWTSVID],
                  bundles: dict[str, JWTBundle]) -> JWTSVID:
        validated: list[JWTSVID] = []
        for index, item in enumerate(svids):
            try:
                svid = validate_jwt_svid(item.svid, self.entry.jwt_audience, bundles,
                                         hint=item.hint,
                                         skew=timedelta(seconds=self.cfg.clock_skew))
            except Refused as exc:
                raise Refused(exc.rule, f"JWT-SVID {index}: {exc.detail}") from None
            if item.spiffe_id and item.spiffe_id != svid.spiffe_id:
                raise Refused("jwt_spiffe_id", f"JWT-SVID {index}: spiffe_id "
                              f"{shown(item.spiffe_id)} differs from claim 'sub' "
                              f"{shown(svid.spiffe_id)}")
            validated.append(svid)
        return select_jwt_svid(validated, self.cfg.hint)

    async def _sleep_watching_expiry(self, delay: float) -> None:
        """Sleep `delay` seconds; if the token on disk expires meanwhile, remove it then."""
        while delay > 0:
            if self.expiry is None:
                await asyncio.sleep(delay)
                return
            until_expiry = (self.expiry - _now()).total_seconds()
            if until_expiry > delay:
                await asyncio.sleep(delay)
                return
            step = max(0.0, until_expiry)
            await asyncio.sleep(step)
            delay -= step
            await asyncio.to_thread(self._expire, report=True)

    def _expire(self, *, report: bool) -> None:
        """The token on disk expired without a renewal: remove it; `report` the failure
        (health goes bad) unless the token was left by an earlier run."""
        self.expiry = None
        if report:
            self.status.jwt_write_status[self.key] = FAILED
            self.status.jwt_expiry.pop(self.entry.jwt_audience, None)
            self.status.last_error = f"JWT-SVID {self.path} expired before it could be renewed"
        try:
            self.outputs.writer.remove([self.path])
        except WriteError as exc:
            log.error("the JWT-SVID in %s expired and cannot be removed: %s", self.path, exc)
            return
        log.log(logging.ERROR if report else logging.INFO,
                "the JWT-SVID in %s expired before it could be renewed: file removed", self.path)

    def _forget_expired_token_on_disk(self) -> None:
        """A token left by an earlier run: removed when expired, else watched for expiry."""
        if self.expiry is not None:
            return
        token = _read_token(self.path)
        expiry = unverified_expiry(token) if token is not None else None
        if expiry is None:
            return
        self.expiry = expiry
        if expiry <= _now():
            self._expire(report=False)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _read_token(path: Path) -> str | None:
    data = read_regular(path, MAX_TOKEN_FILE_BYTES)
    return None if data is None else data.decode("ascii", "replace")
