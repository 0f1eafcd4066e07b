"""A Hydra sweeper on current Optuna: `vnnlab-train -m hydra/sweeper=vnnlab_optuna …`.

What it gives over hydra-optuna-sweeper 1.3 (which pins optuna < 3, DESIGN.md): a job that fails
is a FAIL trial and the study goes on; a trial is pruned from its per-epoch validation metric
(`vnnlab.sweep.pruning.TrialPruning`, in the job); and the study lives in a storage named by one
URL (SQLite beside mlflow.db by default; PostgreSQL or a journal file on a shared filesystem:
vnnlab.sweep.study_storage), so running the same command again resumes it, and several
processes (or nodes) running it at once share it: between them they run n_trials trials.

Each job returns a JobOutcome dict (vnnlab.sweep.records): {"status": FINISHED | FAILED |
BAD_INPUT | PRUNED (vnnlab.tags), "reason", "run_id", "metrics"}; a FINISHED job's `objective`
metric is the trial's value.

The search space is written in Hydra's override grammar, in `hydra.sweeper.params` or as sweeps
on the command line (the command line wins on a key both name):
    choice(a,b,c)  or  a,b,c     categorical
    range(1,10,2)                1, 3, …, 9 (floats with a float step)
    interval(a,b)                float, uniform on [a, b]
    int(interval(a,b))           integer, uniform
    tag(log, interval(a,b))      on a log scale
Other command-line overrides (`key=value`) apply to every trial. Hydra refuses a sweep as the
value of a hydra.* key, so a `params` entry on the command line is added and quoted:
`'+hydra.sweeper.params.model.lr="interval(1e-4,1e-1)"'`; `'model.lr=interval(1e-4,1e-1)'` says
the same.

Hydra imports every plugin module whenever any command starts, so optuna (slow to import) is
imported inside the functions that use it. Hydra runs this module before it is in sys.modules,
where a dataclass cannot have a string annotation (dataclasses looks the module up): hence no
`from __future__ import annotations`, and Optuna's types quoted only in signatures.
"""

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString, Transformer
from hydra.core.utils import JobReturn
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from vnnlab import tags
from vnnlab.sweep import study_storage

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
STORAGE_FILE = "optuna.db"  # in the launch directory, beside MLflow's mlflow.db
CHOICES = {"direction": ("minimize", "maximize"), "pruner": ("median", "none")}
MINIMUMS = {"n_trials": 0, "n_jobs": 1, "pruner_warmup_epochs": 0}


@dataclass
class OptunaSweeperConf:
    """`hydra.sweeper.*` of `hydra/sweeper=vnnlab_optuna`."""

    _target_: str = "hydra_plugins.vnnlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    params: dict[str, Any] = field(default_factory=dict)  # key → search space, e.g. interval(…)
    objective: str = "val/loss"  # the metric of the job's outcome that the study optimises
    direction: str = "minimize"  # minimize | maximize
    n_trials: int = 20  # in the study in all, counting those of earlier sweeps it resumes
    n_jobs: int = 1  # trials per launcher batch (in parallel with the joblib launcher)
    # sqlite:///<file> (default <launch dir>/optuna.db), postgresql+psycopg://…, journal:///<file>
    storage: str | None = None
    study_name: str | None = None  # default: from the experiment and the swept keys
    seed: int | None = 0  # of the TPE sampler
    pruner: str = "median"  # median | none
    pruner_warmup_epochs: int = 1  # epochs never pruned


# Hydra finds a plugin's config only through the ConfigStore, filled when the module is imported.
ConfigStore.instance().store(
    group="hydra/sweeper", name="vnnlab_optuna", node=OptunaSweeperConf, provider="vnnlab"
)


# --- the search space -------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchDimension:
    """One swept key: the distribution Optuna samples, and how a sample becomes an override.
    `choice_texts`: a categorical's choices as Hydra writes them (a list or a dict choice is a
    string to Optuna, whose categoricals hold only plain values)."""

    key: str  # as in the override, with its + or ++ prefix
    distribution: Any  # an optuna.distributions.BaseDistribution
    choice_texts: tuple[str, ...] = ()

    def override(self, value: Any) -> str:
        if self.choice_texts:
            text = self.choice_texts[int(self.distribution.to_internal_repr(value))]
        else:
            text = str(value)  # an int, or a float Hydra parses back exactly (1e-05, 0.1)
        return f"{self.key}={text}"


def parse_search_space(
    params: Mapping[str, Any], arguments: Sequence[str] = (), config_loader: Any = None
) -> tuple[dict[str, SearchDimension], list[str]]:
    """The search space named by `params` and by the sweeps among the command line's
    `arguments`, and the arguments that are fixed overrides, for every trial."""
    parser = OverridesParser.create(config_loader=config_loader)
    from_params = parser.parse_overrides([f"{k}={v}" for k, v in _dotted(params).items()])
    for override in from_params:
        if not override.is_sweep_override():
            raise OverrideParseException(
                override.input_line,
                f"hydra.sweeper.params.{override.key_or_group}: '{override.get_value_string()}'"
                " is not a search space: use choice(…), range(…) or interval(…)",
            )
    parsed_arguments = parser.parse_overrides(list(arguments))
    sweeps = [o for o in parsed_arguments if o.is_sweep_override()]
    fixed = [o.input_line for o in parsed_arguments if not o.is_sweep_override()]
    space = {o.key_or_group: search_dimension(o) for o in [*from_params, *sweeps]}
    return space, fixed


def search_dimension(override: Override) -> SearchDimension:
    """A parsed sweep override → the Optuna distribution it describes."""
    from optuna import distributions

    sweep = override.value()
    tags = set(getattr(sweep, "tags", ()))  # a glob(…) has none
    if tags - {"log"}:
        raise OverrideParseException(
            override.input_line,
            f"{override.key_or_group}: unknown tags {sorted(tags - {'log'})}"
            " (only tag(log, …) is understood)",
        )
    log_scale = "log" in tags
    key = override.get_key_element()
    try:
        if override.is_interval_sweep():
            integers = isinstance(sweep.start, int) and isinstance(sweep.end, int)
            kind = distributions.IntDistribution if integers else distributions.FloatDistribution
            return SearchDimension(key, kind(sweep.start, sweep.end, log=log_scale))
        if override.is_range_sweep():
            return SearchDimension(key, _range_distribution(override, log_scale))
        choices = list(override.sweep_iterator())
        values = [_categorical_value(choice) for choice in choices]
        texts = tuple(Transformer.str(choice) for choice in choices)
        return SearchDimension(key, distributions.CategoricalDistribution(values), texts)
    except ValueError as error:  # Optuna's refusal: low > high, a log scale reaching 0, …
        raise OverrideParseException(
            override.input_line, f"{override.key_or_group}: {error}"
        ) from None


def _range_distribution(override: Override, log_scale: bool) -> "BaseDistribution":
    """range(start, stop, step): Hydra's stop is exclusive, Optuna's high inclusive."""
    from optuna import distributions

    values = list(override.sweep_iterator())
    if not values:
        raise ValueError(f"{override.get_value_string()} is empty")
    low, high, step = min(values), max(values), abs(override.value().step)
    if all(isinstance(v, int) for v in values):
        return distributions.IntDistribution(low, high, step=step, log=log_scale)
    return distributions.FloatDistribution(low, high, step=step, log=log_scale)


def _categorical_value(choice: Any) -> Any:
    if isinstance(choice, QuotedString):
        return choice.text
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return Transformer.str(choice)  # a list or a dict, as Hydra writes it


def _dotted(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"lr": "interval(…)"}} → {"model.lr": "interval(…)"}: a command-line
    `hydra.sweeper.params.model.lr=…` nests the key, a YAML `model.lr: …` does not."""
    dotted: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            dotted |= _dotted(value, f"{prefix}{key}.")
        else:
            dotted[f"{prefix}{key}"] = value
    return dotted


# --- the override a job receives ----------------------------------------------------------------


def trial_override(**fields: str | int) -> str:
    """`+trial={storage:'sqlite:////…/optuna.db',study_name:'…',trial_id:3,…}`: what the job
    needs to report to its trial. Strings are quoted (with Hydra's own escaping): a URL's ':'
    would otherwise split the dict."""
    items = ",".join(f"{key}:{_hydra_literal(value)}" for key, value in fields.items())
    return f"+trial={{{items}}}"


def _hydra_literal(value: str | int) -> str:
    if isinstance(value, str):
        return QuotedString(text=value, quote=Quote.single).with_quotes()
    return str(value)


# --- the sweeper --------------------------------------------------------------------------------


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = OptunaSweeperConf(**settings)
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Ask, launch and tell, a batch of `n_jobs` trials at a time, until the study holds
        `n_trials` finished ones; then the best trial → optimization_results.yaml."""
        check_settings(self.settings)
        space, fixed = parse_search_space(
            self.settings.params, arguments, self.hydra_context.config_loader
        )
        launch_dir = Path(self.config.hydra.runtime.cwd)
        storage = self.settings.storage or f"sqlite:///{(launch_dir / STORAGE_FILE).resolve()}"
        storage = study_storage.absolute(storage, launch_dir)
        name = self.settings.study_name or default_study_name(self.config, space, fixed)
        with study_storage.study_lock(storage):
            study = open_study(storage, name, self.settings)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        distributions = {key: dim.distribution for key, dim in space.items()}
        returns: list[Sequence[JobReturn]] = []
        while trials := ask_batch(study, storage, distributions, self.settings):
            batch = [self._job_overrides(storage, study, trial, space, fixed) for trial in trials]
            returns.append(self._launch(study, trials, batch))
        write_results(study, space, sweep_dir / RESULTS_FILE)
        return returns

    def _job_overrides(
        self,
        storage: str,
        study: "optuna.Study",
        trial: "optuna.Trial",
        space: Mapping[str, SearchDimension],
        fixed: list[str],
    ) -> list[str]:
        overrides = [*fixed, *(dim.override(trial.params[key]) for key, dim in space.items())]
        if self.settings.pruner != "none":
            overrides.append(
                trial_override(
                    storage=storage,
                    study_name=study.study_name,
                    # Optuna's storage key, which optuna.trial.Trial(study, trial_id) takes in
                    # the job; no public accessor. tests/test_optuna_sweeper.py checks that a
                    # Trial rebuilt from it is the same trial (fails if Optuna changes it).
                    trial_id=trial._trial_id,
                    monitor=self.settings.objective,
                    direction=self.settings.direction,
                    warmup_epochs=self.settings.pruner_warmup_epochs,
                )
            )
        return overrides

    def _launch(
        self, study: "optuna.Study", trials: "list[optuna.Trial]", batch: list[list[str]]
    ) -> Sequence[JobReturn]:
        """One batch; a job's folder is named by its trial's number. Each config is composed
        first, as Hydra's own sweeper does: a refusal (an unknown key) ends the sweep, its
        trials told FAIL rather than left RUNNING."""
        from optuna.trial import TrialState

        try:
            self.validate_batch_is_legal(batch)
        except Exception:
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL)
            raise
        results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
        for trial, result in zip(trials, results, strict=True):
            tell_outcome(study, trial, result, self.settings.objective)
        return results


def check_settings(settings: OptunaSweeperConf) -> None:
    """Refuse, in one line naming the key, a setting outside what it allows."""
    for key, allowed in CHOICES.items():
        if getattr(settings, key) not in allowed:
            raise ConfigCompositionException(
                f"hydra.sweeper.{key}={getattr(settings, key)}: allowed {' | '.join(allowed)}"
            )
    for key, minimum in MINIMUMS.items():
        if getattr(settings, key) < minimum:
            raise ConfigCompositionException(
                f"hydra.sweeper.{key}={getattr(settings, key)}: must be at least {minimum}"
            )


def default_study_name(config: DictConfig, space: Mapping[str, Any], fixed: list[str]) -> str:
    """`<experiment>:<swept keys, sorted>[:<digest of the fixed overrides>]`: the same command
    names the same study (and resumes it), another model or data set names another one."""
    experiment = OmegaConf.select(config, "tracking.experiment", default=None) or "optuna"
    name = f"{experiment}:{','.join(sorted(space))}"
    if fixed:
        digest = hashlib.sha1("\n".join(sorted(fixed)).encode()).hexdigest()[:8]
        name += f":{digest}"
    return name


# --- the study --------------------------------------------------------------------------------


def open_study(storage: str, name: str, settings: OptunaSweeperConf) -> "optuna.Study":
    """Load the study, or create it (here, in the parent process, before any job opens the
    storage: processes creating one SQLite schema at once race, DESIGN.md). Called under
    study_storage.study_lock, as other sweepers of the same study may be starting too."""
    import optuna

    study = optuna.create_study(
        storage=study_storage.open_storage(storage),
        study_name=name,
        direction=settings.direction,
        load_if_exists=True,
    )
    _check_resumable(study, settings)
    fail_interrupted_trials(study)
    return study


def ask_batch(
    study: "optuna.Study",
    storage: str,
    distributions: "dict[str, BaseDistribution]",
    settings: OptunaSweeperConf,
) -> "list[optuna.Trial]":
    """The next batch of up to n_jobs new trials, each owned by this process (its host and pid
    as user attributes); none once the study holds n_trials trials. Counting and asking are one
    step under the storage's lock, so that sweepers sharing the study never overshoot n_trials
    nor get one trial number twice."""
    import optuna

    with study_storage.study_lock(storage):
        size = min(settings.n_jobs, remaining_trials(study, settings))
        if size <= 0:
            return []
        # Seeded by the trials already there: the same seed would replay a resumed study's
        # first random suggestions, or another sweeper's of the same study.
        seed = None if settings.seed is None else settings.seed + len(study.trials)
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        trials = [study.ask(distributions) for _ in range(size)]
        for trial in trials:
            for key, value in study_storage.owner_attrs().items():
                trial.set_user_attr(key, value)
    return trials


def _check_resumable(study: "optuna.Study", settings: OptunaSweeperConf) -> None:
    """A resumed study must optimise the same metric the same way."""
    stored = study.user_attrs.get("objective", settings.objective)
    direction = study.direction.name.lower()
    if (stored, direction) != (settings.objective, settings.direction):
        raise ConfigCompositionException(
            f"hydra.sweeper: study '{study.study_name}' {direction}s {stored}, not "
            f"{settings.direction}s {settings.objective}: set hydra.sweeper.study_name"
        )
    if "objective" not in study.user_attrs:  # a new study
        study.set_user_attr("objective", settings.objective)


def fail_interrupted_trials(study: "optuna.Study") -> None:
    """Tell FAIL the trials an interrupted earlier sweep left RUNNING (their jobs died with it),
    so that the sampler stops waiting on them. Only trials whose sweeper is gone: another
    sweeper sharing the study tells its own (study_storage.owner_alive)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if study_storage.owner_alive(trial.user_attrs):
            continue
        log.warning(f"trial {trial.number} was left RUNNING by an interrupted sweep: FAIL")
        study.tell(trial.number, state=TrialState.FAIL)


def remaining_trials(study: "optuna.Study", settings: OptunaSweeperConf) -> int:
    """n_trials less every trial in the study: finished ones, and those running in this or
    another sweeper."""
    return max(0, settings.n_trials - len(study.get_trials(deepcopy=False)))


@dataclass(frozen=True)
class Verdict:
    """What the study is told about one job."""

    state: str  # the name of an optuna TrialState
    value: float | None = None
    reason: str = ""
    run_id: str = ""


def judge(job: JobReturn, objective: str) -> Verdict:
    """A job's return → the trial's state: FINISHED → COMPLETE with the objective (FAIL when
    it is missing or not finite), PRUNED → PRUNED, anything else (FAILED, BAD_INPUT, a job
    that raised or returned no outcome) → FAIL."""
    try:
        outcome = job.return_value  # raises what the job raised
    except Exception as error:
        return Verdict("FAIL", reason=f"the job raised {type(error).__name__}: {error}")
    if not isinstance(outcome, Mapping):
        return Verdict("FAIL", reason=f"the job returned {outcome!r}, not an outcome")
    status, run_id = outcome.get("status"), outcome.get("run_id") or ""
    reason = outcome.get("reason") or ""
    if status == tags.PRUNED:
        return Verdict("PRUNED", reason=reason, run_id=run_id)
    if status != tags.FINISHED:
        return Verdict("FAIL", reason=f"{status}: {reason}", run_id=run_id)
    value = (outcome.get("metrics") or {}).get(objective)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        reason = f"objective {objective} is {value!r}, not a finite number"
        return Verdict("FAIL", reason=reason, run_id=run_id)
    return Verdict("COMPLETE", float(value), run_id=run_id)


def tell_outcome(
    study: "optuna.Study", trial: "optuna.Trial", job: JobReturn, objective: str
) -> None:
    from optuna.trial import TrialState

    verdict = judge(job, objective)
    if verdict.run_id:  # the trial ↔ its MLflow run
        trial.set_user_attr("mlflow_run_id", verdict.run_id)
    if verdict.reason:
        trial.set_user_attr("reason", verdict.reason)
    if verdict.state == "FAIL":
        log.warning(f"trial {trial.number} FAIL: {verdict.reason}")
    else:
        shown = "" if verdict.value is None else f": {objective} = {verdict.value:.6g}"
        log.info(f"trial {trial.number} {verdict.state}{shown}")
    study.tell(trial, verdict.value, state=TrialState[verdict.state])


def write_results(study: "optuna.Study", space: Mapping[str, SearchDimension], path: Path) -> None:
    """The best trial (its params, value and the overrides that rerun it) → `path`."""
    trials = study.get_trials(deepcopy=False)
    results: dict[str, Any] = {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "objective": study.user_attrs.get("objective"),
        "trials": dict(Counter(trial.state.name for trial in trials)),
    }
    best = _best_trial(study)
    if best is None:
        log.warning(f"study {study.study_name}: no trial completed")
    else:
        overrides = [dim.override(best.params[k]) for k, dim in space.items() if k in best.params]
        results |= {
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": best.params,
            "best_overrides": overrides,
        }
        log.info(f"best trial {best.number}: {results['objective']} = {best.value}")
        log.info(f"best params: {' '.join(overrides)}")
    OmegaConf.save(OmegaConf.create(results), path)


def _best_trial(study: "optuna.Study") -> "optuna.trial.FrozenTrial | None":
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None
