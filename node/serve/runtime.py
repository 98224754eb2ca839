"""A running node: database (migrated), SCP, background loops and, with the embedded broker, a worker.

Each role can also run alone (`echo-worker` on a GPU host); this class puts together the ones
that belong to the node host. Background work is a list of `PeriodicLoop`s: study assembly, the
delivery loop (what no worker sent, `node.serve.deliveries`), the reconciler (attempts whose
process died, studies the broker lost, poison studies: `node.store.reconcile`) and, embedded,
the worker's watch. The reconciler also runs once at start and after the embedded worker is
restarted.
"""

from __future__ import annotations

import logging
import threading

from pynetdicom.transport import ThreadedAssociationServer

from node.broker.app import INFER_TIME_LIMIT_S
from node.config.settings import Settings
from node.dicom.assembly import InferencePublisher, StudyAssembler
from node.dicom.association_log import AssociationLog
from node.dicom.ingest import Ingestor
from node.dicom.scp import start_scp
from node.dicom.spool import Spool
from node.hl7.listener import Hl7Listener, start_listener
from node.observe.http import ObserveServer
from node.serve.deliveries import DeliveryLoop
from node.serve.embedded_worker import EmbeddedWorker
from node.serve.learning import learning_loops
from node.serve.loops import PeriodicLoop
from node.serve.observe import start_observe
from node.serve.retention import retention_loops
from node.store.database import Database, migrate, open_database, safe_url
from node.store.models import utcnow
from node.store.reconcile import ReconcilePolicy, Reconciliation, reconcile

log = logging.getLogger(__name__)

WORKER_WATCH_INTERVAL_S = 5.0
RECONCILE_INTERVAL_S = 5.0


class NodeStartError(RuntimeError):
    """The node cannot start for a reason the operator can fix (port taken, database unreachable)."""


def delivery_interval(backoff_seconds: float) -> float:
    """Look for due deliveries at least every second, more often when the backoff is shorter."""
    return max(0.1, min(1.0, backoff_seconds / 2))


def assembly_interval(quiet_seconds: float) -> float:
    """Sweep often enough that a study waits at most a quarter of its quiet period more (1 s cap)."""
    return max(0.05, min(1.0, quiet_seconds / 4))


class Node:
    def __init__(
        self,
        settings: Settings,
        *,
        publisher: InferencePublisher | None = None,
        embedded_worker: bool | None = None,
        bind_address: str = "0.0.0.0",
    ) -> None:
        self.settings = settings
        self._publisher = publisher
        self._run_worker = settings.embedded_broker if embedded_worker is None else embedded_worker
        self.bind_address = bind_address
        self.database: Database | None = None
        self.server: ThreadedAssociationServer | None = None
        self.hl7: Hl7Listener | None = None  # signed reports in, when ECHO_HL7_LISTEN is set
        self.http: ObserveServer | None = None  # /metrics, /healthz, /readyz on ECHO_HTTP
        self.worker: EmbeddedWorker | None = None
        self.associations: AssociationLog | None = None
        self.assembler: StudyAssembler | None = None
        self.deliveries: DeliveryLoop | None = None  # what no worker sent (`node.serve.deliveries`)
        self._loops: list[PeriodicLoop] = []
        self._policy = ReconcilePolicy.from_settings(settings, INFER_TIME_LIMIT_S)
        self._reconcile_lock = threading.Lock()  # the loop and the worker's watch both reconcile

    def start(self) -> None:
        settings = self.settings
        spool = Spool(settings.spool_dir)
        try:
            spool.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise NodeStartError(f"cannot create the spool folder {spool.root}: {error.strerror}") from error
        try:
            database = self.database = open_database(settings)
            migrate(database.engine)
        except Exception as error:  # unreachable server, bad credentials, unwritable file, bad revision
            raise NodeStartError(
                f"cannot open and migrate the database at {safe_url(settings.effective_database_url)}: "
                f"{type(error).__name__}: {str(error).splitlines()[0]}"
            ) from error
        self.associations = AssociationLog(database.sessions)
        orphans = self.associations.close_orphans()
        leftovers = spool.remove_stale_temp_files()
        if orphans or leftovers:
            log.warning("closed %d associations left open and removed %d partial files", orphans, leftovers)
        self.assembler = StudyAssembler(
            database.sessions,
            settings.quiet_seconds,
            self._publisher or self._celery_publisher(),
            draft_lateral_only=settings.draft_lateral_only,
        )
        # Attempts our previous run (or any dead process on this host) left "running": buried, and
        # their studies published again; poison studies failed.
        try:
            self.reconcile(immediate=True)
        except Exception:  # the periodic loop tries again
            log.exception("the start-up reconciliation failed; the reconcile loop will try again")
        if self._run_worker and settings.embedded_broker:
            # Our previous child worker died with us; what it had fetched from the SQL broker is gone.
            again = self.assembler.republish_unfinished()
            if again:
                log.info("%d queued studies will be published again to the embedded broker", again)
        try:
            self.server = start_scp(
                settings, Ingestor(database.sessions, spool), self.associations, self.bind_address
            )
        except OSError as error:
            raise NodeStartError(
                f"cannot listen on port {settings.port}: {error.strerror or error}"
            ) from error
        log.info(
            "SCP %s listening on %s:%d (data in %s)",
            settings.ae_title,
            self.bind_address,
            settings.port,
            settings.data_dir,
        )
        if settings.hl7_listen is not None:
            try:
                self.hl7 = start_listener(settings, database.sessions)
            except OSError as error:
                raise NodeStartError(
                    f"cannot listen for HL7 on {settings.hl7_listen}: {error.strerror or error}"
                ) from error
        self.deliveries = DeliveryLoop(database.sessions, settings)
        self._loops = [
            PeriodicLoop("assembly", assembly_interval(settings.quiet_seconds), self._assembly_tick),
            PeriodicLoop(
                "delivery", delivery_interval(settings.delivery_backoff_seconds), self.deliveries.tick
            ),
            PeriodicLoop("reconcile", RECONCILE_INTERVAL_S, self.reconcile),
            *retention_loops(settings, database.sessions),  # none unless ECHO_RETENTION_DAYS is set
            *learning_loops(database.sessions),  # signed reports matched, drafts scored against them
        ]
        if self._run_worker:
            self.worker = EmbeddedWorker(settings)
            self.worker.start()
            self._loops.append(PeriodicLoop("worker-watch", WORKER_WATCH_INTERVAL_S, self._watch_worker))
        for loop in self._loops:
            loop.start()
        self.http = start_observe(settings, database.sessions, serves_model=self._run_worker)

    def reconcile(self, *, immediate: bool = False) -> Reconciliation:
        """One reconciler pass (`node.store.reconcile`); what it republished, the assembly publishes.

        `immediate`: the node knows the dead processes' messages are gone too (start-up, its own
        worker restarted), so their attempts are buried without waiting for a redelivery."""
        assert self.database is not None, "node not started"
        policy = self._policy.immediate() if immediate else self._policy
        with self._reconcile_lock, self.database.sessions.begin() as session:
            return reconcile(session, utcnow(), policy)

    def _watch_worker(self) -> None:
        assert self.worker is not None and self.assembler is not None, "node not started"
        assert self.database is not None, "node not started"
        self.worker.stop_hung(self.database.sessions, INFER_TIME_LIMIT_S, utcnow())  # restarted below
        if not self.worker.ensure_running():
            return
        # The dead worker's attempts and the message it held are lost: bury, fail or republish now.
        self.reconcile(immediate=True)
        if self.settings.embedded_broker:
            again = self.assembler.republish_unfinished()
            if again:
                log.info("%d queued studies will be published again after the worker restart", again)

    def _assembly_tick(self) -> None:
        assert self.associations is not None and self.assembler is not None, "node not started"
        self.associations.retry_pending()
        self.assembler.sweep()

    def _celery_publisher(self) -> InferencePublisher:
        from node.broker.app import create_app
        from node.broker.publish import CeleryPublisher

        return CeleryPublisher(create_app(self.settings))

    def stop(self) -> None:
        """Stop taking associations and HL7 messages, then the loops and the worker; safe to call twice."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self.hl7 is not None:
            self.hl7.stop()
            self.hl7 = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        for loop in self._loops:
            loop.stop()
        self._loops = []
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.database is not None:
            self.database.dispose()
            self.database = None
        log.info("node stopped")
