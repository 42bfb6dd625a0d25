"""The per-user folder of accepted fine-tuned models (issue 17)."""

from __future__ import annotations

import pytest

from napari_unet.core.io.atomic import OutputError
from napari_unet.core.network.model_file import load_model, save_model
from napari_unet.core.network.registry import models_folder, resolve_model_path, shipped_models
from napari_unet.core.network.user_models import (
    ENV_VAR,
    remove_user_model,
    save_user_model,
    user_models,
    user_models_folder,
)


def test_the_folder_is_the_per_user_data_folder_unless_the_variable_names_one(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv(ENV_VAR)
    assert user_models_folder() == platformdirs.user_data_path("napari-unet", appauthor=False) / "models"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert user_models_folder() == tmp_path / "mine"


def test_a_saved_model_says_where_it_came_from_and_is_found_by_name(tiny_model, _private_models_folder):
    tiny_model.description.training_history.append({"kind": "fine-tune", "images": ["a"]})
    path = save_user_model(tiny_model, base_model="nuclei", training_data=["a", "b"], verdict="F1@0.5: 0.50 → 0.70")
    assert path.parent == _private_models_folder
    (listed,) = user_models()
    assert listed.path == path and listed.title == "tiny test model"
    desc = load_model(path).description
    assert "Fine-tuned from nuclei" in desc.description and "a, b" in desc.description
    assert "F1@0.5: 0.50 → 0.70" in desc.description
    last = desc.training_history[-1]
    assert last["base_model"] == "nuclei" and last["verdict"].startswith("F1") and last["accepted"]
    assert resolve_model_path(listed.key) == path
    second = save_user_model(tiny_model, base_model="nuclei", training_data=["a"], verdict="")
    assert second != path and len(user_models()) == 2  # never overwrites an earlier one


def test_an_unwritable_folder_is_a_clear_error(tiny_model, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(ENV_VAR, str(blocker / "models"))
    with pytest.raises(OutputError, match="is a file, not a folder"):
        save_user_model(tiny_model, base_model="x", training_data=[], verdict="")


def test_only_models_of_the_users_folder_can_be_removed(tiny_model, tmp_path):
    path = save_user_model(tiny_model, base_model="x", training_data=[], verdict="")
    elsewhere = save_model(tiny_model, tmp_path / "other.unet.safetensors")
    with pytest.raises(OutputError, match="not one of your saved models"):
        remove_user_model(elsewhere)
    if shipped_models():
        with pytest.raises(OutputError, match="not one of your saved models"):
            remove_user_model(shipped_models()[0].path)
        assert shipped_models()[0].path.parent == models_folder()
    assert elsewhere.exists()
    remove_user_model(path)
    assert not path.exists() and user_models() == []


def test_the_models_command_lists_saved_models(tiny_model, capsys):
    from napari_unet.cli import main

    save_user_model(tiny_model, base_model="nuclei", training_data=["cells"], verdict="")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "saved fine-tuned models" in out and "tiny test model: Fine-tuned from nuclei" in out
