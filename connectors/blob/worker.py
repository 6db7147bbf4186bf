"""Competing consumers of one Storage Queue of Event Grid blob events.

Each message is received under a visibility timeout, so while one worker holds it no
other sees it. It is deleted only after the caller's ``handle`` returned (its point is
written). If ``handle`` fails, the message reappears after the timeout; once it has been
dequeued ``max_dequeues`` times it is handed to ``poison`` (the failure journal) and
deleted. While ``handle`` runs, the timeout is extended so a slow image stays with its
worker. A message that is not an Event Grid event is poison at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage
from imgrag._errors import EventDecodeError

from .errors import describe
from .events import BlobEvent, decode_message
from .secrets import redact

log = logging.getLogger(__name__)

_MAX_POISON_CONTENT = 2000


@dataclass(frozen=True)
class PoisonMessage:
    """A message given up on: why, how often it was tried, and its (redacted) text."""

    message_id: str
    dequeue_count: int
    reason: str
    content: str


@dataclass
class WorkerStats:
    received: int = 0
    handled: int = 0
    ignored: int = 0
    failed: int = 0
    poisoned: int = 0
    renewed: int = 0


class QueueWorker:
    """One consumer; run as many as you like, in threads or processes, on one queue."""

    def __init__(
        self,
        queue: QueueClient,
        *,
        container: str,
        prefix: str = "",
        handle: Callable[[BlobEvent], None],
        poison: Callable[[PoisonMessage], None],
        max_dequeues: int = 5,
        visibility_timeout: int = 300,
        batch_size: int = 16,
        secrets: Iterable[str] = (),
        renew: bool = True,
    ) -> None:
        self._queue = queue
        self.renew = renew
        self.container = container
        self.prefix = prefix
        self._handle = handle
        self._poison = poison
        self.max_dequeues = max_dequeues
        self.visibility_timeout = visibility_timeout
        self.batch_size = min(max(batch_size, 1), 32)  # the service hands out at most 32
        self._secrets = list(secrets)
        self.stats = WorkerStats()

    def _ours(self, event: BlobEvent) -> bool:
        return event.container == self.container and event.name.startswith(self.prefix)

    def run_once(self) -> int:
        """Receive one batch and process it; the number of messages received."""
        try:
            messages = list(
                self._queue.receive_messages(
                    messages_per_page=self.batch_size,
                    max_messages=self.batch_size,
                    visibility_timeout=self.visibility_timeout,
                )
            )
        except AzureError as exc:
            text, _, _ = describe(exc, self._secrets)
            log.warning("queue %s: receive failed: %s", self._queue.queue_name, text)
            return 0
        for message in messages:
            self.stats.received += 1
            self._process(message)
        return len(messages)

    def run(self, stop: threading.Event, idle_seconds: float = 2.0) -> WorkerStats:
        """Process until ``stop`` is set, pausing ``idle_seconds`` when the queue is empty."""
        while not stop.is_set():
            if self.run_once() == 0:
                stop.wait(idle_seconds)
        return self.stats

    def _process(self, message: QueueMessage) -> None:
        count = int(message.dequeue_count or 0)
        if count > self.max_dequeues:
            self._give_up(message, f"dequeued {count} times without success")
            return
        try:
            events = [e for e in decode_message(message.content) if self._ours(e)]
        except EventDecodeError as exc:
            self._give_up(message, str(exc))
            return
        if not events:
            self.stats.ignored += 1
            self._delete(message)
            return
        try:
            with self._kept_invisible(message):
                for event in events:
                    self._handle(event)
        except Exception as exc:
            reason = redact(f"{type(exc).__name__}: {exc}", self._secrets).splitlines()[0]
            self.stats.failed += 1
            if count >= self.max_dequeues:
                self._give_up(message, f"failed on each of {count} dequeues; last: {reason}")
            else:
                log.warning(
                    "queue %s: message %s failed (dequeue %d of %d), retried after %ds: %s",
                    self._queue.queue_name,
                    message.id,
                    count,
                    self.max_dequeues,
                    self.visibility_timeout,
                    reason,
                )
            return
        self.stats.handled += 1
        self._delete(message)

    @contextmanager
    def _kept_invisible(self, message: QueueMessage) -> Iterator[None]:
        """While the work runs, push the message's visibility timeout out every half timeout,
        so a slow image is not handed to a second worker. Each renewal gives a new pop
        receipt, which the final delete must use."""
        if not self.renew:
            yield
            return
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.visibility_timeout / 2):
                try:
                    updated = self._queue.update_message(
                        message.id,
                        pop_receipt=message.pop_receipt,
                        visibility_timeout=self.visibility_timeout,
                    )
                except AzureError as exc:
                    text, _, _ = describe(exc, self._secrets)
                    log.warning(
                        "queue %s: could not extend %s: %s",
                        self._queue.queue_name,
                        message.id,
                        text,
                    )
                    return
                message.pop_receipt = updated.pop_receipt
                self.stats.renewed += 1

        thread = threading.Thread(target=renew, name=f"renew-{message.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _give_up(self, message: QueueMessage, reason: str) -> None:
        content = message.content if isinstance(message.content, str) else repr(message.content)
        poison = PoisonMessage(
            message_id=str(message.id),
            dequeue_count=int(message.dequeue_count or 0),
            reason=redact(reason, self._secrets),
            content=redact(content[:_MAX_POISON_CONTENT], self._secrets),
        )
        try:
            self._poison(poison)
        except Exception as exc:
            # Not journaled means not deleted: it comes back and is tried again.
            log.error(
                "queue %s: could not journal poison message %s: %s",
                self._queue.queue_name,
                message.id,
                redact(str(exc), self._secrets),
            )
            return
        self.stats.poisoned += 1
        self._delete(message)

    def _delete(self, message: QueueMessage) -> None:
        try:
            self._queue.delete_message(message.id, message.pop_receipt)
        except ResourceNotFoundError:
            # The visibility timeout ran out and another worker took the message: its
            # work is done again there, which is harmless because point writes are idempotent.
            log.warning(
                "queue %s: message %s was taken over by another worker before it was deleted; "
                "raise visibility_timeout_seconds",
                self._queue.queue_name,
                message.id,
            )
        except AzureError as exc:
            text, _, _ = describe(exc, self._secrets)
            log.warning(
                "queue %s: delete of %s failed: %s", self._queue.queue_name, message.id, text
            )
