"""The extractor interface: what every stage that turns audio into a stored artifact has in common.

An extractor has a ``name``, a ``version``, a frozen parameter dataclass built from its config section, and
from these its identity: :meth:`Extractor.key` for one file's artifact, :meth:`Extractor.identity` for
manifests and the workflow's rules. Everything that computes, stores, skips or schedules an artifact goes
through these two, so an artifact's identity is written once, here and in the extractor's ``params``.
"""
from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from ..faults import is_fault
from ..store.artifacts import ArtifactKey, ArtifactStore, StoredArtifact, params_hash
from ..store.tables import DecodeRecord

if TYPE_CHECKING:
    from ..config.settings import Settings
    from .profiling import JobProfile


@dataclass(frozen=True)
class Computed:
    """One file's new artifact: its payload and the metadata stored with it (``seconds``: what it cost), and the
    arrays it was made from when the manifest block is built from them (extractors with ``inline_block``)."""

    payload: bytes
    meta: dict
    arrays: Any = None


class Extractor(ABC):
    """Base of every extractor.

    Subclasses set ``name``, ``version`` (bump it when the output changes for the same audio and parameters),
    ``suffix`` of the stored artifact, ``block_schema`` (JSON Schema of the manifest block) and implement
    :meth:`from_settings` and :meth:`compute_one` (or :meth:`compute`, for batched work).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    suffix: ClassVar[str] = ".json"
    artifact_kind: ClassVar[str] = ""  # the store's folder for it; the name when empty
    # False: the artifact is the manifest block's JSON, inserted by finalize as stored. True: the block is built
    # from the artifact by :meth:`block` and kept in the shard table (a CLAP .npz).
    inline_block: ClassVar[bool] = False
    reports_progress: ClassVar[bool] = False  # compute advances the job's progress itself, by work units
    block_schema: ClassVar[dict] = {"type": "object"}
    work_unit_name: ClassVar[str] = ""  # what :meth:`work_units` counts, when not files ("windows")
    # The extractor's own config sections (``audiofeat.config.settings.Section`` subclasses): their schemas join
    # the config's, and :meth:`from_settings` reads them with ``settings.of(...)``.
    settings_sections: ClassVar[tuple] = ()
    # True: computed from the input file itself (every channel at its own rate), found through the shard's
    # inventory rows (:meth:`use_sources`), not from the decoded WAV.
    reads_source: ClassVar[bool] = False
    # A dataset-level matrix of one of its columns, a row per dataset row (zeros where a file has none):
    # ``(file name in results_dir, column, width)``, patched by finalize where parts changed.
    matrix: ClassVar[tuple[str, str, int] | None] = None

    def __init__(self, params: Any, *, wav_params_hash: str | None) -> None:
        self.params = params
        self.wav_params_hash = wav_params_hash  # the decoded WAV's identity, part of every key computed from it
        self._sources: dict[str, dict] = {}

    def use_sources(self, rows: dict[str, dict]) -> None:
        """The shard's inventory rows by content key (path and stat), for an extractor that ``reads_source``."""
        self._sources = rows

    def source_row(self, file: DecodeRecord) -> dict:
        return self._sources[file.content_key]

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: "Settings", *, job: bool) -> "Extractor":
        """The extractor for a run's settings. ``job`` is true inside the job that computes (it may resolve what
        is expensive to know: a checkpoint's digest, the device); false in the workflow's process."""

    def key_params(self) -> dict:
        """Everything that changes the artifact; what :attr:`params_hash` hashes."""
        params = dataclasses.asdict(self.params)
        return params if self.wav_params_hash is None else {**params, "wav": self.wav_params_hash}

    @cached_property
    def params_hash(self) -> str:
        return params_hash(self.key_params())

    def key(self, content_key: str) -> ArtifactKey:
        return ArtifactKey(content_key, self.artifact_kind or self.name, self.version, self.params_hash, self.suffix)

    def identity(self) -> dict:
        """What manifests record under ``extractors.<name>``."""
        return {"version": self.version, "params_hash": self.params_hash}

    def rule_identity(self) -> str:
        """The workflow rule's ``params:`` value: a change reruns the rule's jobs."""
        return f"v{self.version}-{self.params_hash}"

    def work_units(self, file: DecodeRecord) -> int:
        """Independent pieces of work a missing artifact costs (a shard job claims no more threads than these)."""
        return 1

    def compute_one(self, file: DecodeRecord) -> Computed:
        raise NotImplementedError(f"{type(self).__name__} computes in batches")

    def compute(self, files: list[DecodeRecord], *, threads: int, profile: "JobProfile", progress=None
                ) -> Iterator[tuple[DecodeRecord, Computed | BaseException]]:
        """``(file, artifact or error)`` for every file, in any order: :meth:`compute_one` on ``threads``
        threads. A fault is raised; any other error is yielded as that file's verdict. An extractor that
        ``reports_progress`` advances ``progress`` by work units as it goes (within a long file)."""
        def one(file: DecodeRecord) -> tuple[DecodeRecord, Computed | BaseException]:
            try:
                started = time.perf_counter()
                computed = self.compute_one(file)
                seconds = time.perf_counter() - started
                profile.add(self.name, seconds)
                return file, dataclasses.replace(computed, meta={"seconds": round(seconds, 6), **computed.meta})
            except Exception as exc:  # noqa: BLE001 - one file's verdict must not stop the shard; a fault does
                if is_fault(exc):
                    raise
                return file, exc

        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=self.name) as pool:
            yield from pool.map(one, files)

    def block(self, store: ArtifactStore, content_key: str, stored: StoredArtifact, *, arrays: Any = None,
              kept: dict | None = None) -> dict | None:
        """The manifest block of an ``inline_block`` extractor's artifact (from ``arrays`` in hand, a ``kept``
        block from the shard's previous table, or the stored file); None for the others."""
        return None

    def column_types(self) -> dict:
        """The dataset's typed columns for this extractor's block (``{column: pyarrow type}``): by default each
        number its block schema declares, as ``float64``, named ``<extractor>_<field>``."""
        import pyarrow as pa

        return {f"{self.name}_{field}": pa.float64() for field in self._numeric_fields()}

    def columns(self, block: dict) -> dict:
        """One row's values of :meth:`column_types` from a manifest block: every field of it, so that
        :meth:`block_of` gives the block back."""
        return {f"{self.name}_{field}": block.get(field) for field in self._numeric_fields()}

    @classmethod
    def block_of(cls, row: dict) -> dict:
        """The manifest block that :meth:`columns` made a dataset row's values of (``row``: pyarrow's dict)."""
        return {field: row[f"{cls.name}_{field}"] for field in cls._numeric_fields()}

    @classmethod
    def _numeric_fields(cls) -> list[str]:
        def numeric(schema: dict) -> bool:
            kinds = schema.get("type")
            return bool({"number", "integer"} & set(kinds if isinstance(kinds, list) else [kinds]))

        return [name for name, schema in cls.block_schema.get("properties", {}).items() if numeric(schema)]
