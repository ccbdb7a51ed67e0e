"""C2PA content credentials, read with the official ``c2pa-python`` bindings. No Scrapy.

What is taken from the **active manifest**:

* the claim generator (``claim_generator_info[0]`` ``name version``, or the older ``claim_generator``);
* the actions (``c2pa.actions`` / ``c2pa.actions.v2``): action, software agent, digital source type;
* the validation state the SDK reports (``valid``, ``invalid``, ``trusted``) and its failure codes;
* the training-and-data-mining assertion (``c2pa.training-mining`` or ``cawg.training-mining``): an
  entry ``…ai_generative_training``, ``…ai_training`` or ``…data_mining`` whose ``use`` is
  ``notAllowed`` or ``constrained`` (a constraint a crawler cannot evaluate) refuses training. A
  refusal is honoured even when the manifest does not validate: tampering can only make us skip.

The SDK is asked not to fetch anything over the network (remote manifests, OCSP). A file without
a JUMBF box is not handed to the SDK at all.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Final

from imagecrawl.metadata.containers import sniff

logger = logging.getLogger(__name__)

_MIME: Final = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heif",
}
_TRAINING_LABEL: Final = re.compile(r"^(c2pa|cawg)\.training-mining(\.v\d+)?$")
_TRAINING_ENTRIES: Final = ("ai_generative_training", "ai_training", "data_mining")
_REFUSING_USES: Final = frozenset({"notallowed", "constrained"})
_ACTIONS_LABEL: Final = re.compile(r"^c2pa\.actions(\.v\d+)?$")
_SETTINGS: Final = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_MAX_ACTIONS: Final = 50


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a file's C2PA manifest says (all None when it has none)."""

    claim_generator: str | None = None
    #: ``[{"action", "software_agent"?, "digital_source_type"?}, ...]`` of the active manifest
    actions: tuple[dict[str, str], ...] = ()
    #: ``valid``, ``invalid`` or ``trusted`` (the SDK's validation state, lower-cased)
    validation: str | None = None
    #: the failure codes of the validation (``claimSignature.mismatch``, ...)
    failures: tuple[str, ...] = ()
    #: ``"<entry>: <use>"`` of the training-mining entry that refuses training, else None
    training_refusal: str | None = None
    #: why the manifest could not be read, when a JUMBF box was there but unreadable
    error: str | None = None

    @property
    def present(self) -> bool:
        return self.validation is not None or self.claim_generator is not None

    def digital_source_type(self) -> str | None:
        """The digital source type of the first action that states one."""
        return next((a["digital_source_type"] for a in self.actions if "digital_source_type" in a), None)


def _context() -> Any:
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict(_SETTINGS))


def read_credentials(data: bytes) -> Credentials:
    """The C2PA credentials of an image file's bytes (never raises)."""
    mime = _MIME.get(sniff(data) or "")
    if mime is None or b"jumb" not in data:
        return Credentials()
    try:
        import c2pa
    except ImportError:  # the dependency is declared; a broken install only loses this reader
        return Credentials(error="c2pa-python unavailable")
    try:
        reader = c2pa.Reader(mime, io.BytesIO(data), context=_context())
        try:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
        finally:
            reader.close()
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "ManifestNotFound" in str(exc):
            return Credentials()
        logger.debug("unreadable C2PA manifest: %s", exc)
        return Credentials(error=str(exc)[:200] or type(exc).__name__)
    except Exception as exc:  # the SDK on hostile bytes: never a crash
        logger.debug("C2PA reader failed", exc_info=True)
        return Credentials(error=type(exc).__name__)
    return credentials_from_store(store, state)


def _text(value: Any) -> str | None:
    return value.strip()[:200] or None if isinstance(value, str) else None


def _generator(manifest: dict[str, Any]) -> str | None:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        name, version = _text(info[0].get("name")), _text(info[0].get("version"))
        if name:
            return f"{name} {version}" if version else name
    return _text(manifest.get("claim_generator"))


def _actions(assertions: list[Any]) -> tuple[dict[str, str], ...]:
    out: list[dict[str, str]] = []
    for assertion in assertions:
        if not isinstance(assertion, dict) or not _ACTIONS_LABEL.match(str(assertion.get("label", ""))):
            continue
        data = assertion.get("data")
        for action in (data.get("actions") if isinstance(data, dict) else None) or []:
            if not isinstance(action, dict) or not _text(action.get("action")):
                continue
            entry = {"action": str(_text(action.get("action")))}
            agent = action.get("softwareAgent")
            agent_name = _text(agent.get("name")) if isinstance(agent, dict) else _text(agent)
            if agent_name:
                version = _text(agent.get("version")) if isinstance(agent, dict) else None
                entry["software_agent"] = f"{agent_name} {version}" if version else agent_name
            source = _text(action.get("digitalSourceType"))
            if source:
                entry["digital_source_type"] = source.rstrip("/").rsplit("/", 1)[-1]
            out.append(entry)
            if len(out) >= _MAX_ACTIONS:
                return tuple(out)
    return tuple(out)


def _training_refusal(assertions: list[Any]) -> str | None:
    for assertion in assertions:
        if not isinstance(assertion, dict) or not _TRAINING_LABEL.match(str(assertion.get("label", ""))):
            continue
        data = assertion.get("data")
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            use = value.get("use") if isinstance(value, dict) else None
            if str(key).endswith(_TRAINING_ENTRIES) and isinstance(use, str) and use.lower() in _REFUSING_USES:
                return f"{key}: {use}"
    return None


def credentials_from_store(store: dict[str, Any], state: Any) -> Credentials:
    """:class:`Credentials` of a manifest store as the SDK's ``Reader.json()`` gives it."""
    manifests = store.get("manifests")
    active = store.get("active_manifest")
    manifest = manifests.get(active) if isinstance(manifests, dict) and isinstance(active, str) else None
    if not isinstance(manifest, dict):
        return Credentials(validation=str(state).lower() if state else None)
    assertions = manifest.get("assertions")
    assertions = assertions if isinstance(assertions, list) else []
    failures: list[str] = []
    results = store.get("validation_results")
    active_results = results.get("activeManifest") if isinstance(results, dict) else None
    if isinstance(active_results, dict):
        failures = [str(f.get("code")) for f in active_results.get("failure") or [] if isinstance(f, dict)]
    return Credentials(
        claim_generator=_generator(manifest),
        actions=_actions(assertions),
        validation=str(getattr(state, "name", state)).lower() if state is not None else None,
        failures=tuple(failures),
        training_refusal=_training_refusal(assertions),
    )
