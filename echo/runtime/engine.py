"""The onnxruntime engine: an exported model directory in, draft reports out. No torch.

    engine = Engine.load(model_dir)               # checksums, sessions, warm-up: once per process
    report = engine.generate("study/frontal.dcm") # findings, impression, counts, timings

Sessions are created once and reused; the provider is the best available (TensorRT, CUDA, CPU)
unless the caller names one; on GPU providers decoder steps use IO binding. The same engine runs
the AR model ("ar"), the multi-step teacher ("multistep"), the one-step student ("onestep") and
the student with confidence-gated refinement ("refine": one forward per block, one more where some
position is below the refine threshold); each model's manifest says which it serves, and a call
may ask for another (a comparison, or the draft gate re-decoding with more steps per block):

    engine.generate(path, decode="multistep", steps=8)   # report.decode == "multistep"
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from echo.data.preprocess import PreprocessConfig, PreprocessedImage, model_input
from echo.errors import UserError
from echo.report import split_report
from echo.runtime.batching import context_rows, plan_passes, prepare_context
from echo.runtime.decoders import (
    DecodeOutput,
    decode_ar,
    decode_multistep,
    decode_onestep,
    decode_refine,
)
from echo.runtime.graphs import (
    DecoderGraph,
    VisionGraph,
    open_prefix_session,
    open_session,
    provider_entries,
    session_options,
)
from echo.runtime.images import ImageSource, display_pixels
from echo.runtime.manifest import (
    DECODER_GRAPH,
    DECODES,
    DENSE_VISION_INPUTS,
    EMBEDDINGS_FILE,
    TOKENIZER_FILE,
    VISION_GRAPH,
    VISION_INPUTS,
    VISION_OUTPUTS,
    ModelManifest,
    check_redecode_pair,
    decoder_input_names,
    decoder_output_names,
    load_manifest,
)
from echo.runtime.model_files import load_embeddings, load_tokenizer
from echo.runtime.prepared import PreparedImage
from echo.runtime.providers import GPU_PROVIDERS, choose_providers
from echo.runtime.remasking import remasking_strategy
from echo.runtime.result import GeneratedReport
from echo.runtime.session import PreparedContext
from echo.runtime.tensorrt import decoder_profile, vision_profile


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode; None fields take the manifest's values."""

    decode: str | None = None
    max_new_tokens: int | None = None
    steps: int | None = None  # multistep: step budget per block (default: block size)
    # multistep: low_confidence_dynamic tau (default: the manifest's threshold);
    # refine: the confidence below which a position is re-predicted (the manifest's refine_threshold)
    threshold: float | None = None
    remasking: str = "low_confidence_dynamic"


class Engine:
    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        vision: VisionGraph,
        decoder: DecoderGraph,
        embeddings: np.ndarray,
        tokenizer: Tokenizer,
        providers: list[str],
        max_batch: int = 8,
    ) -> None:
        self.model_dir = model_dir
        self.manifest = manifest
        self.vision = vision
        self.decoder = decoder
        self.embeddings = embeddings
        self.tokenizer = tokenizer
        self.providers = providers
        self.max_batch = max_batch
        self.preprocess_config = PreprocessConfig.from_dict(manifest.preprocess)
        self.start_seconds = 0.0  # load + warm-up, set by load()
        self.redecoder: Engine | None = None  # the manifest's re-decode model (the draft gate's)

    # ---- loading --------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        providers: Sequence[str] | str | None = None,
        threads: int | None = None,
        *,
        io_binding: bool | None = None,
        warm_up: bool = True,
        verify: bool = True,
        cache_dir: Path | None = None,
        max_batch: int = 8,
        vision: VisionGraph | None = None,
    ) -> Engine:
        """Open an exported model directory.

        providers: None for the best available, or names ("cuda,cpu", ["tensorrt", "cuda"]).
        threads: CPU threads per session (None: onnxruntime's default, the physical cores).
        io_binding: None to use it exactly when a GPU provider leads. verify: check sha256s.
        cache_dir: where TensorRT may cache built engines; max_batch: the most studies one
        generate_batch call decodes together (TensorRT builds its shape profile for it). vision: an
        open session of this directory's vision graph (a byte-identical one), used instead of a new one."""
        started = time.perf_counter()
        directory = Path(model_dir)
        manifest = load_manifest(directory, verify=verify)
        if threads is not None and threads < 0:
            raise UserError(f"threads must be >= 0, got {threads}")
        if max_batch < 1:
            raise UserError(f"max_batch must be >= 1, got {max_batch}")
        chosen = choose_providers(providers, ort.get_available_providers())
        options = session_options(threads)
        layers = manifest.text.num_layers
        if vision is None:
            vision_session = open_session(
                directory / VISION_GRAPH,
                options,
                provider_entries(chosen, manifest.dtype, cache_dir, vision_profile(manifest, max_batch)),
                (VISION_INPUTS, DENSE_VISION_INPUTS),
                list(VISION_OUTPUTS),
            )
            vision = VisionGraph(vision_session, manifest.dtype)
        decoder_session = open_session(
            directory / DECODER_GRAPH,
            options,
            provider_entries(chosen, manifest.dtype, cache_dir, decoder_profile(manifest, max_batch)),
            decoder_input_names(layers),
            decoder_output_names(layers),
        )
        bind = chosen[0] in GPU_PROVIDERS if io_binding is None else io_binding
        prefix = open_prefix_session(directory, manifest, options, chosen) if bind else None
        engine = cls(
            directory,
            manifest,
            vision,
            DecoderGraph(decoder_session, manifest, bind, prefix),
            load_embeddings(directory / EMBEDDINGS_FILE, manifest),
            load_tokenizer(directory / TOKENIZER_FILE),
            decoder_session.get_providers(),
            max_batch,
        )
        if manifest.redecode is not None:  # opened like this one: same providers, threads, checks
            nested = directory / manifest.redecode
            kept = {
                "io_binding": io_binding,
                "verify": verify,
                "cache_dir": cache_dir,
                "max_batch": max_batch,
            }
            # byte-identical vision graphs (by the manifests' sha256s, which loading verifies): one
            # session for both, opened and warmed once
            same = load_manifest(nested, verify=False).files.get(VISION_GRAPH) == manifest.files.get(
                VISION_GRAPH
            )
            shared = engine.vision if same else None
            engine.redecoder = cls.load(nested, chosen, threads, warm_up=warm_up, vision=shared, **kept)
            check_redecode_pair(manifest, engine.redecoder.manifest, str(nested))
        if warm_up:
            engine.warm_up()
        engine.start_seconds = time.perf_counter() - started
        return engine

    def warm_up(self) -> None:
        """One short generation, so the first study does not pay for allocation and kernel choice."""
        side = 2 * self.preprocess_config.factor
        image = np.full((side, side), 0.5, dtype=np.float32)
        self.generate(image, max_new_tokens=self.manifest.generation.block_size)

    @property
    def version(self) -> str:
        return self.manifest.version

    # ---- generation -----------------------------------------------------------------------------

    def generate(
        self,
        image: ImageSource,
        *,
        decode: str | None = None,
        max_new_tokens: int | None = None,
        steps: int | None = None,
        threshold: float | None = None,
        remasking: str = "low_confidence_dynamic",
    ) -> GeneratedReport:
        """Draft the report for one image (a path, a pydicom Dataset, a 2-D array, or a
        PreparedImage from `prepare`)."""
        options = DecodeOptions(decode, max_new_tokens, steps, threshold, remasking)
        return self.generate_batch([image], options=options)[0]

    def prepare(self, image: ImageSource) -> PreparedImage:
        """`image` read and preprocessed for this model; decoding it again reuses its vision features."""
        started = time.perf_counter()
        processed = model_input(display_pixels(image), self.preprocess_config)
        return PreparedImage(processed, time.perf_counter() - started)

    def generate_batch(
        self, images: Sequence[ImageSource | PreparedImage], *, options: DecodeOptions | None = None
    ) -> list[GeneratedReport]:
        """Reports for several studies, in order, decoded together up to max_batch at a time (one
        decoder forward per step for all rows of a pass). With the "causal" prompt layout images of
        any grids share a pass (shorter contexts left-padded, echo.runtime.batching); with
        "block_causal" only images whose contexts have one length do."""
        options = options or DecodeOptions()
        self.check_options(options)
        if not images:
            return []
        given = [isinstance(image, PreparedImage) for image in images]
        prepared = [
            image if ready else self.prepare(image) for image, ready in zip(images, given, strict=True)
        ]
        preprocess_seconds = sum(image.charge_preprocess() for image in prepared) / len(images)
        processed = [image.processed for image in prepared]
        lengths = [len(row) for row in context_rows([item.grid_thw for item in processed], self.manifest)]
        passes = plan_passes(lengths, self.manifest.generation.prompt_attention, self.max_batch)
        reports: list[GeneratedReport | None] = [None] * len(images)
        for indices in passes:
            group_started = time.perf_counter()
            alone = prepared[indices[0]] if len(indices) == 1 else None
            output, vision_seconds, context = self._decode([processed[i] for i in indices], options, alone)
            if alone is not None and given[indices[0]] and alone.context is None:
                alone.keep(context)  # the caller's PreparedImage: its next decode skips the vision graph
            seconds = time.perf_counter() - group_started + preprocess_seconds * len(indices)
            timings = {
                "preprocess": preprocess_seconds * len(indices),
                "vision": vision_seconds,
                "prefill": output.prefill_seconds,
                "decode": output.seconds - output.prefill_seconds,
                "total": seconds,
            }
            for row, index in enumerate(indices):
                reports[index] = self._report(output, row, seconds, timings, options, len(indices))
        missing = [index for index, report in enumerate(reports) if report is None]
        if missing:  # never a shorter list: callers pair reports with their studies by position
            raise RuntimeError(f"no report was decoded for images {missing} of {len(images)}")
        return [report for report in reports if report is not None]

    def decode_processed(
        self, images: Sequence[PreprocessedImage], options: DecodeOptions | None = None
    ) -> DecodeOutput:
        """Token ids for preprocessed images decoded as one pass (the parity tests' entry point);
        "block_causal" models take images whose contexts have one length."""
        options = options or DecodeOptions()
        self.check_options(options)
        return self._decode(images, options)[0]

    # ---- internals ------------------------------------------------------------------------------

    def _decode(
        self,
        images: Sequence[PreprocessedImage],
        options: DecodeOptions,
        alone: PreparedImage | None = None,
    ) -> tuple[DecodeOutput, float, PreparedContext]:
        """The pass's tokens, the seconds its vision features took (~0 when `alone`, the pass's one
        image, holds its rows or its features from an earlier decode) and its context rows."""
        started = time.perf_counter()
        context = alone.context if alone is not None else None
        context = context or self._prepare(images, None if alone is None else alone.features)
        vision_seconds = time.perf_counter() - started
        return self._decode_context(context, options), vision_seconds, context

    def _decode_context(self, context: PreparedContext, options: DecodeOptions) -> DecodeOutput:
        gen, tokens = self.manifest.generation, self.manifest.tokens
        decode = options.decode or gen.decode
        max_new = options.max_new_tokens or gen.max_new_tokens
        if decode == "ar":
            return decode_ar(self.decoder, self.embeddings, context, max_new, tokens.eos)
        assert tokens.mask is not None, "a block decoder needs the mask token"
        blocks = {
            "block_size": gen.block_size,
            "max_new_tokens": max_new,
            "mask_id": tokens.mask,
            "eos_id": tokens.eos,
            "prompt_attention": gen.prompt_attention,
        }
        if decode == "onestep":
            output = decode_onestep(self.decoder, self.embeddings, context, **blocks)
        else:
            threshold = self.threshold_for(decode, options)
            assert threshold is not None
            if decode == "refine":
                output = decode_refine(self.decoder, self.embeddings, context, **blocks, threshold=threshold)
            else:
                output = decode_multistep(
                    self.decoder,
                    self.embeddings,
                    context,
                    **blocks,
                    remasking=options.remasking,
                    steps_per_block=options.steps,
                    threshold=threshold,
                )
        return output

    def threshold_for(self, decode: str, options: DecodeOptions) -> float | None:
        """The threshold a decoding runs with: the call's, else the manifest's (multistep: tau,
        refine: refine_threshold); None for decodings that have none."""
        gen = self.manifest.generation
        if decode == "multistep":
            return gen.threshold if options.threshold is None else options.threshold
        if decode == "refine":
            return gen.refine_threshold if options.threshold is None else options.threshold
        return None

    def _prepare(self, images: Sequence[PreprocessedImage], known: dict | None = None) -> PreparedContext:
        """Vision features (reused from `known`, PreparedImage.features, where this graph computed
        them) in the embedded context rows (left-padded where the layout allows), M-RoPE positions."""
        return prepare_context(images, self.vision, self.embeddings, self.manifest, known)

    def check_options(self, options: DecodeOptions) -> None:
        """Refuse options this model cannot decode with, before any image is read."""
        decode = options.decode or self.manifest.generation.decode
        if decode not in DECODES:
            raise UserError(f"decode must be one of {', '.join(DECODES)}, not {decode!r}")
        if decode != "ar" and self.manifest.tokens.mask is None:
            raise UserError(
                f"{self.manifest.name} has no mask token, so it can decode only 'ar', not {decode!r}"
            )
        if options.max_new_tokens is not None and options.max_new_tokens < 1:
            raise UserError(f"max new tokens must be >= 1, got {options.max_new_tokens}")
        if options.steps is not None and options.steps < 1:
            raise UserError(f"steps per block must be >= 1, got {options.steps}")
        if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
            raise UserError(f"threshold must be within [0, 1], got {options.threshold}")
        if decode == "multistep":
            remasking_strategy(options.remasking)

    def _report(
        self,
        output: DecodeOutput,
        row: int,
        seconds: float,
        timings: dict[str, float],
        options: DecodeOptions,
        batch_size: int,
    ) -> GeneratedReport:
        ids = output.tokens[row]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        sections = split_report(text)
        decode = options.decode or self.manifest.generation.decode
        steps = None
        if decode == "multistep":
            steps = options.steps or self.manifest.generation.block_size
        return GeneratedReport(
            findings=sections.findings,
            impression=sections.impression,
            text=text,
            tokens=len(ids),
            token_ids=tuple(ids),
            forwards=output.forwards,
            seconds=seconds,
            timings=dict(timings),
            model_version=self.manifest.version,
            decode=decode,
            batch_size=batch_size,
            confidences=tuple(output.confidences[row]) if output.confidences else (),
            steps=steps,
            threshold=self.threshold_for(decode, options),
        )
