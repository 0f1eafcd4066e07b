"""Each study in experiments/ is served to Hydra as `+experiment=<name>` and composes into a
valid config, its sweep axes included."""

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from vnnlab import CONFIG_DIR
from vnnlab.validate import validate

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
STUDIES = sorted(p.parent.name for p in EXPERIMENTS.glob("*/config.yaml"))
# what a study's command line must add (a study on a table takes the user's file)
GIVEN = {
    "table_reduction": ["data.path=low_rank.csv"],
    "uci_regression": ["data.path=boston.csv"],
    "uci_methods": ["data.path=boston.csv"],
}


def test_studies_are_found_where_the_package_points():
    import vnnlab

    served = Path(vnnlab.__file__).parent / "experiments"  # a link in a checkout, a copy in a wheel
    assert sorted(p.parent.name for p in served.glob("*/config.yaml")) == STUDIES
    assert {"gap_uncertainty", "learning_rate", "vae_latent_sigma2"} <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_composes_into_a_valid_config(study):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={study}"], return_hydra_config=True)
        listed = GlobalHydra.instance().config_loader().get_group_options("experiment")
        assert study in listed
        params = {k: str(v).split(",") for k, v in (cfg.hydra.sweeper.params or {}).items()}
        for values in itertools.product(*params.values()):  # every job of the study's sweep
            overrides = [f"{key}={value}" for key, value in zip(params, values, strict=True)]
            given = [f"+experiment={study}", *GIVEN.get(study, []), *overrides]
            validate(compose("config", overrides=given))
