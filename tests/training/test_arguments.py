"""Issue 18.8: a config typo was reported as its consequence ("No training data") instead of by name."""

from __future__ import annotations

import pytest

from llara_st.training import parse_adaptation_arguments


def test_a_typo_is_named_before_the_settings_are_checked(tmp_path):
    config = {"model_name_or_path": "m", "output_dir": str(tmp_path), "text_path": ["notes"], "use_cpu": True}
    with pytest.raises(ValueError, match=r"\['text_path'\].*did you mean 'text_path' → 'text_paths'\?") as error:
        parse_adaptation_arguments(config)
    assert "No training data" not in str(error.value)
