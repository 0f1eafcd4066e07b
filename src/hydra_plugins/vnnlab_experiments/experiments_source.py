"""Serves the studies in experiments/ as the Hydra config group `experiment`.

Each study lives in its own folder, experiments/<name>/, beside its README and results, with
its overrides in experiments/<name>/config.yaml; `vnnlab-train -m +experiment=<name>` finds it
there. Hydra discovers plugins only in the `hydra_plugins` namespace package, hence this folder
outside vnnlab/. The experiments folder is found through the vnnlab package (src/vnnlab/
experiments links to it, and a wheel carries the configs), so it works installed or not.
"""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "experiment"
STUDY_CONFIG = "config.yaml"


def experiments_folder() -> Path:
    import vnnlab  # located, not imported for its contents: the folder sits beside it

    return Path(vnnlab.__file__).parent / "experiments"


class ExperimentsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append("vnnlab-experiments", f"vnnlab-experiments://{experiments_folder()}")


class ExperimentsConfigSource(ConfigSource):
    """`experiment/<name>` ↔ `<folder>/<name>/config.yaml`; nothing else."""

    @staticmethod
    def scheme() -> str:
        return "vnnlab-experiments"

    def _study_file(self, config_path: str) -> Path | None:
        group, _, name = self._normalize_file_name(config_path).partition("/")
        if group != GROUP or not name.endswith(".yaml") or "/" in name:
            return None
        return Path(self.path) / name.removesuffix(".yaml") / STUDY_CONFIG

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._study_file(config_path)
        if path is None or not path.is_file():
            raise ConfigLoadError(f"Config not found : {config_path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(text),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        path = self._study_file(config_path)
        return path is not None and path.is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        found: list[str] = []
        if config_path.strip("/") == "" and results_filter in (None, ObjectType.GROUP):
            found.append(GROUP)
        if config_path.strip("/") == GROUP and results_filter in (None, ObjectType.CONFIG):
            studies = sorted(p.parent.name for p in Path(self.path).glob(f"*/{STUDY_CONFIG}"))
            found.extend(studies)
        return found
