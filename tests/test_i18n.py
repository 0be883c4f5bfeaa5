"""Every node has a help page and its names in every language the pack ships; the panel strings too.

ComfyUI's frontend reads:
- a node's help page from web/docs/<NodeId>/<locale>.md, else web/docs/<NodeId>.md (served under
  /extensions/<pack>/docs/); the plain <NodeId>.md is the English page every other language falls back to;
- display names, input and output names and tooltips from locales/<lang>/main.json ("nodeDefs"), which
  ComfyUI merges for all packs at GET /i18n.
English tooltips and descriptions are not repeated in locales/en: the Python node is their one source
(a translation file wins over it in the newest frontend, so a copy would go stale). Other languages
translate them.

A node added to NODE_CLASS_MAPPINGS without its pages and entries fails here.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from comfy_server import PACK_FOLDER_NAME, REPO_ROOT

from gates.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

LOCALES = REPO_ROOT / "locales"
DOCS = REPO_ROOT / "web" / "docs"
WEB = REPO_ROOT / "web"
TRANSLATED = ("zh",)           # languages with their own help pages and translated tooltips
LANGUAGES = ("en", *TRANSLATED)
PANEL_SECTION = "dataseteGates"
# vue-i18n compiles node names (and, in older frontends, tooltips): these characters are its syntax
# ({placeholder}, @:linked, plural|forms, $) and would be mangled or throw.
MESSAGE_SYNTAX = re.compile(r"[{}@|$]")

NODE_IDS = sorted(NODE_CLASS_MAPPINGS)


def main_json(language: str) -> dict:
    return json.loads((LOCALES / language / "main.json").read_text(encoding="utf-8"))


def node_inputs(node_id: str) -> dict[str, dict]:
    """Input name -> its options, for the inputs a person sees (required and optional, not hidden)."""
    types = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    inputs = {}
    for group in ("required", "optional"):
        for name, spec in (types.get(group) or {}).items():
            inputs[name] = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return inputs


def node_outputs(node_id: str) -> list[tuple[str, str | None]]:
    cls = NODE_CLASS_MAPPINGS[node_id]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None) or ()
    return [(name, tooltips[i] if i < len(tooltips) else None) for i, name in enumerate(names)]


def help_pages(node_id: str) -> dict[str, Path]:
    return {"en": DOCS / f"{node_id}.md", **{lang: DOCS / node_id / f"{lang}.md" for lang in TRANSLATED}}


def mentioned(name: str, text: str) -> bool:
    """`name` in code font, or inside a range such as `route_1` … `route_8`."""
    if f"`{name}`" in text:
        return True
    numbered = re.fullmatch(r"(.*?)(\d+)", name)
    if not numbered:
        return False
    prefix, number = numbered.group(1), int(numbered.group(2))
    for first, last in re.findall(rf"`{re.escape(prefix)}(\d+)`\s*(?:…|\.\.\.?|–|-)\s*`{re.escape(prefix)}(\d+)`",
                                  text):
        if int(first) <= number <= int(last):
            return True
    return False


def strings(tree, path=()):
    """Every (path, string) of a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from strings(value, (*path, key))
    elif isinstance(tree, str):
        yield path, tree


# --- help pages ----------------------------------------------------------------------------------

def test_the_pack_has_nodes_to_check():
    assert "DataseteImageGate" in NODE_IDS


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_node_has_a_help_page_in_english_and_chinese(node_id):
    zh_name = main_json("zh")["nodeDefs"].get(node_id, {}).get("display_name")
    titles = {"en": NODE_DISPLAY_NAME_MAPPINGS[node_id], "zh": zh_name}
    for language, page in help_pages(node_id).items():
        assert page.is_file(), f"{node_id} has no {language} help page: add {page.relative_to(REPO_ROOT)}"
        text = page.read_text(encoding="utf-8")
        first = text.splitlines()[0] if text else ""
        assert first == f"# {titles[language]}", f"{page.name}: the page starts with its display name"
        missing = [name for name in node_inputs(node_id) if not mentioned(name, text)]
        missing += [name for name, _ in node_outputs(node_id) if not mentioned(name, text)]
        assert not missing, f"{page.relative_to(REPO_ROOT)} does not describe {missing}"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_no_locale_page_shadows_the_english_fallback_with_a_stale_copy(node_id):
    # The frontend asks for <NodeId>/en.md before <NodeId>.md: an en.md would hide the English page.
    assert not (DOCS / node_id / "en.md").exists(), "keep the English page in one place: web/docs/<NodeId>.md"


def test_help_pages_are_plain_markdown_the_frontend_can_show():
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        # Relative links would leave ComfyUI's page (1.27) or open raw markdown (1.58): name the node instead.
        assert not re.search(r"\]\((?![a-z]+://|#)", text), f"{page}: a relative link"
        assert "<script" not in text.lower()


# --- node names, inputs and outputs in every language -----------------------------------------------

@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_node_has_its_names_in_each_language(node_id, language):
    entry = main_json(language)["nodeDefs"].get(node_id)
    where = f"locales/{language}/main.json nodeDefs.{node_id}"
    assert entry, f"{where} is missing"
    assert entry.get("display_name"), f"{where}.display_name is missing"
    inputs = entry.get("inputs", {})
    outputs = entry.get("outputs", {})
    for name in node_inputs(node_id):
        assert inputs.get(name, {}).get("name"), f"{where}.inputs.{name}.name is missing"
    expected = node_outputs(node_id)
    for index, (name, _) in enumerate(expected):
        assert outputs.get(str(index), {}).get("name"), f"{where}.outputs.{index}.name ({name}) is missing"
    # A renamed or removed input or output leaves its entry behind: that must fail too.
    assert set(inputs) <= set(node_inputs(node_id)), f"{where}: entries for inputs the node does not have"
    assert set(outputs) <= {str(i) for i in range(len(expected))}, f"{where}: entries for outputs it does not have"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_english_names_are_the_nodes_own(node_id):
    entry = main_json("en")["nodeDefs"][node_id]
    assert entry["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert {name: spec["name"] for name, spec in entry["inputs"].items()} == {n: n for n in node_inputs(node_id)}
    assert [entry["outputs"][str(i)]["name"] for i in range(len(node_outputs(node_id)))] == [
        name for name, _ in node_outputs(node_id)]
    # Tooltips and the description come from the Python node in English (see the module docstring).
    assert "description" not in entry
    assert not [path for path, _ in strings(entry) if path[-1] == "tooltip"]


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("node_id", NODE_IDS)
def test_translations_cover_the_description_and_every_tooltip(node_id, language):
    entry = main_json(language)["nodeDefs"][node_id]
    where = f"locales/{language}/main.json nodeDefs.{node_id}"
    if getattr(NODE_CLASS_MAPPINGS[node_id], "DESCRIPTION", ""):
        assert entry.get("description"), f"{where}.description is missing"
    for name, options in node_inputs(node_id).items():
        if options.get("tooltip"):
            assert entry["inputs"][name].get("tooltip"), f"{where}.inputs.{name}.tooltip is missing"
    for index, (name, tooltip) in enumerate(node_outputs(node_id)):
        if tooltip:
            assert entry["outputs"][str(index)].get("tooltip"), f"{where}.outputs.{index}.tooltip ({name}) is missing"


@pytest.mark.parametrize("language", LANGUAGES)
def test_node_strings_hold_no_message_syntax(language):
    bad = [(".".join(path), text) for path, text in strings(main_json(language)["nodeDefs"])
           if MESSAGE_SYNTAX.search(text)]
    assert not bad, f"vue-i18n would read these as message syntax: {bad}"


def test_every_locale_folder_has_a_main_json():
    folders = sorted(p.name for p in LOCALES.iterdir() if p.is_dir())
    assert set(LANGUAGES) <= set(folders)
    for folder in folders:
        main_json(folder)  # parses


# --- the panel's own strings (web/i18n.js) ------------------------------------------------------------

T_CALL = re.compile(r"""\bt\(\s*"([A-Za-z0-9_.]+)"\s*,\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z_$][\w$]*))""")


def panel_calls() -> list[tuple[str, str, str | None]]:
    """(file, key, English literal or None) of every t("key", ...) in the pack's scripts."""
    calls = []
    for script in sorted(WEB.glob("*.js")):
        for match in T_CALL.finditer(script.read_text(encoding="utf-8")):
            english = json.loads(f'"{match.group(2)}"') if match.group(2) is not None else None
            calls.append((script.name, match.group(1), english))
    return calls


def lookup(tree: dict, key: str):
    for part in key.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def test_the_panel_uses_translated_strings():
    keys = {key for _, key, _ in panel_calls()}
    assert {"panel.cancel", "panel.brush", "panel.eraser", "panel.clear"} <= keys


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_panel_string_in_use_is_in_each_language(language):
    section = main_json(language)[PANEL_SECTION]
    missing = sorted({f"{script}: {key}" for script, key, _ in panel_calls() if not lookup(section, key)})
    assert not missing, f"locales/{language}/main.json {PANEL_SECTION} lacks {missing}"


def test_english_panel_strings_match_the_code():
    section = main_json("en")[PANEL_SECTION]
    differ = [(key, english, lookup(section, key)) for _, key, english in panel_calls()
              if english is not None and lookup(section, key) != english]
    assert not differ, f"the English in the code and in locales/en differ: {differ}"


@pytest.mark.parametrize("language", TRANSLATED)
def test_translated_panel_strings_match_the_english_keys_and_placeholders(language):
    english = dict(strings(main_json("en")[PANEL_SECTION]))
    translated = dict(strings(main_json(language)[PANEL_SECTION]))
    assert set(translated) == set(english), (
        f"keys only in en: {sorted(set(english) - set(translated))}; "
        f"only in {language}: {sorted(set(translated) - set(english))}")
    for path, text in english.items():
        assert set(re.findall(r"\{(\w+)\}", translated[path])) == set(re.findall(r"\{(\w+)\}", text)), path


# --- what a real ComfyUI serves ---------------------------------------------------------------------------

@pytest.mark.comfy
def test_comfyui_serves_the_translations_and_the_help_pages(comfy):
    served = comfy.get_json("/i18n")
    for language in LANGUAGES:
        assert served[language]["nodeDefs"][NODE_IDS[0]] == main_json(language)["nodeDefs"][NODE_IDS[0]]
        assert served[language][PANEL_SECTION] == main_json(language)[PANEL_SECTION]
    for node_id in NODE_IDS:
        for page in help_pages(node_id).values():
            url = f"{comfy.url}/extensions/{PACK_FOLDER_NAME}/{page.relative_to(WEB).as_posix()}"
            with urllib.request.urlopen(url, timeout=30) as response:
                # The newest frontend refuses a help page served as HTML (its own index.html on a miss).
                assert "html" not in response.headers.get("Content-Type", "")
                assert response.read() == page.read_bytes()
