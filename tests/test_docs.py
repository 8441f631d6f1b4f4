"""The README and docs/ stay true: every link reaches a file (and heading), every command in a bash
block names a module or script that exists, with flags its ``--help`` (argparse) lists."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(`{3,}|~{3,})([^\n`]*)\n(.*?)^\1[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SHELLS = {"bash", "sh", "shell", "console"}
PROJECT = ("vericar", "train", "benchmarks", "app")  # whose flags are checked; others only must exist


def _without_code(text: str) -> str:
    """Markdown text without fenced blocks and inline code (a link there is an example, not a link)."""
    text = FENCE.sub("", text)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text, flags=re.S)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercased, punctuation dropped (hyphens kept), spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            a = anchor(m.group(1))
            n = seen.get(a, 0)
            seen[a] = n + 1
            out.add(a if n == 0 else f"{a}-{n}")
    return out


def link_problems(page: Path) -> list[str]:
    """Links of ``page`` to a missing file or heading (web links are not followed)."""
    problems = []
    for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file, _, frag = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            problems.append(f"{page.name}: link to a missing file: {target}")
        elif frag and dest.suffix == ".md" and frag not in anchors(dest):
            problems.append(f"{page.name}: link to a missing heading: {target}")
    return problems


def commands(text: str) -> list[list[str]]:
    """Each command in the bash blocks of ``text``, as tokens (continuations joined, comments and
    ``&&`` / ``|`` / ``;`` chains split, ``[--optional flags]`` unbracketed)."""
    out = []
    for m in FENCE.finditer(text):
        if m.group(2).strip().split(" ")[0].lower() not in SHELLS:
            continue
        for line in m.group(3).replace("\\\n", " ").splitlines():
            try:
                toks = shlex.split(line, comments=True)
            except ValueError:
                toks = line.split("#")[0].split()
            cmd: list[str] = []
            for tok in toks + [";"]:
                if tok in ("&&", "||", "|", ";"):
                    out += [cmd] if cmd else []
                    cmd = []
                else:
                    cmd += [tok.strip("[]")] if tok.strip("[]") else []
    return out


def target(cmd: list[str]) -> tuple[str, str, list[str]] | None:
    """("module" | "script", name, the arguments after it) of a python / accelerate launch command."""
    while cmd and re.fullmatch(r"[A-Za-z_]\w*=.*", cmd[0]):  # VAR=value python ...
        cmd = cmd[1:]
    if cmd[:2] == ["accelerate", "launch"]:
        rest = cmd[2:]
        if "-m" in rest:
            i = rest.index("-m")
            return ("module", rest[i + 1], rest[i + 2:]) if i + 1 < len(rest) else None
        for i, tok in enumerate(rest):
            if tok.endswith(".py"):
                return "script", tok, rest[i + 1:]
        return None
    if cmd and re.fullmatch(r"python3?", cmd[0]) and len(cmd) > 1:
        if cmd[1] == "-m" and len(cmd) > 2:
            return "module", cmd[2], cmd[3:]
        if cmd[1].endswith(".py"):
            return "script", cmd[1], cmd[2:]
    return None


# Runs each command's --help in one process (torch and gradio are imported once, not once a command),
# as `python -m MOD` / `python path.py` would: prints {key: [exit code, help text]}.
_HELPER = r"""
import contextlib, io, json, os, runpy, sys
out = {}
for kind, name, sub in json.loads(sys.argv[1]):
    argv, path, buf, code = sys.argv[:], sys.path[:], io.StringIO(), 0
    sys.argv = [name] + ([sub] if sub else []) + ["--help"]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                sys.path.insert(0, os.path.dirname(os.path.abspath(name)))
                runpy.run_path(name, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        code = 1
    finally:
        sys.argv, sys.path = argv, path
    out[json.dumps([kind, name, sub])] = [code, buf.getvalue()]
print("\n" + json.dumps(out))
"""
_HELP: dict[tuple[str, str, str | None], tuple[int, str]] = {}


def _project_target(cmd: list[str]) -> tuple[str, str, list[str]] | None:
    t = target(cmd)
    return t if t and t[1].replace("/", ".").split(".")[0] in PROJECT else None


def _help_keys(t: tuple[str, str, list[str]]) -> list[tuple[str, str, str | None]]:
    kind, name, args = t
    sub = args[0] if args and not args[0].startswith("-") else None
    return [(kind, name, None)] + ([(kind, name, sub)] if sub else [])


def _run_helps(keys: list[tuple[str, str, str | None]]) -> None:
    """Every --help the pages need, in one subprocess; the answers kept for the session."""
    wanted = set(keys)
    for page in PAGES:
        for cmd in commands(page.read_text(encoding="utf-8")):
            t = _project_target(cmd)
            if t and (t[0] == "module" or (ROOT / t[1]).is_file()):
                wanted.update(_help_keys(t))
    todo = sorted((k for k in wanted if k not in _HELP), key=str)
    r = subprocess.run([sys.executable, "-c", _HELPER, json.dumps(todo)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for key, (code, text) in json.loads(r.stdout.strip().rsplit("\n", 1)[-1]).items():
        _HELP[tuple(json.loads(key))] = (code, text)


def help_flags(kind: str, name: str, sub: str | None = None) -> frozenset[str] | None:
    """The --flags a project command's --help lists (and its subcommand's, when ``sub`` is one)."""
    keys = [(kind, name, None)] + ([(kind, name, sub)] if sub else [])
    if any(k not in _HELP for k in keys):
        _run_helps(keys)
    code, text = _HELP[(kind, name, None)]
    if code != 0:
        return None
    if sub and _HELP[(kind, name, sub)][0] == 0:  # else a positional argument, not a subcommand
        text += _HELP[(kind, name, sub)][1]
    return frozenset(re.findall(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)", text))


def command_problems(text: str, where: str) -> list[str]:
    """Commands in ``text``'s bash blocks naming a module, script or flag that does not exist."""
    problems = []
    sys.path.insert(0, str(ROOT))
    try:
        for cmd in commands(text):
            t = target(cmd)
            if t is None:
                continue
            kind, name, args = t
            if kind == "module":
                try:
                    found = importlib.util.find_spec(name) is not None
                except ModuleNotFoundError:
                    found = False
            else:
                found = (ROOT / name).is_file()
            if not found:
                problems.append(f"{where}: no such {kind}: {name} (in `{' '.join(cmd)}`)")
                continue
            if _project_target(cmd) is None:
                continue
            sub = args[0] if args and not args[0].startswith("-") else None
            known = help_flags(kind, name, sub)
            if known is None:
                problems.append(f"{where}: `{kind} {name} --help` failed (in `{' '.join(cmd)}`)")
                continue
            for arg in args:
                flag = arg.split("=")[0]
                if flag.startswith("--") and len(flag) > 2 and flag not in known:
                    problems.append(f"{where}: {name} has no flag {flag} (in `{' '.join(cmd)}`)")
    finally:
        sys.path.remove(str(ROOT))
    return problems


def test_the_checks_can_fail(tmp_path):
    """A made-up page with a broken link, heading, module, script and flag: each is reported."""
    (tmp_path / "there.md").write_text("# A heading (`x.yaml`)\n\n## Again\n\n## Again\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](there.md#a-heading-xyaml) [ok](there.md#again-1) [ok](#title) [web](https://x.org/y)\n"
        "[gone](missing.md) [no heading](there.md#nowhere) `[code](not-checked.md)`\n\n"
        "```bash\npython -m vericar.evaluate --model default --queries q.csv --json out.json  # fine\n"
        "python -m vericar.evaluate --queries q.csv --no-such-flag 3\npython -m vericar.nothing_here\n"
        "accelerate launch --num_processes 2 train/no_such_script.py --config c.yaml\n"
        "python train/train.py --config c.yaml \\\n    --made-up-flag && echo done\n```\n")
    links = link_problems(page)
    assert links == ["page.md: link to a missing file: missing.md", "page.md: link to a missing heading: there.md#nowhere"]
    cmds = command_problems(page.read_text(), "page.md")
    assert len(cmds) == 4, cmds
    for words in ("no flag --no-such-flag", "no such module: vericar.nothing_here",
                  "no such script: train/no_such_script.py", "train/train.py has no flag --made-up-flag"):
        assert any(words in p for p in cmds), (words, cmds)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_reach_a_file_and_heading(page):
    assert link_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_commands_name_real_modules_scripts_and_flags(page):
    assert command_problems(page.read_text(encoding="utf-8"), page.name) == []


def test_readme_is_short():
    """A newcomer reads it to the end: the rest lives in docs/."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
