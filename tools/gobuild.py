"""Build the stack's Go programs from their Go modules into .tools/, as tools/gobuild.toml lists them.

    python -m tools.gobuild [NAME...]     build these (default: every program in the table)
    python -m tools.gobuild --list        print the table: name, module@version, output

Each program is built in its own throwaway module (.tools/build/NAME: `go mod init`, its replaces
re-declared, `go get -tool PACKAGE@VERSION`), so the version is exactly the table's, and then
`go build -trimpath` with the table's ldflags. A stamp records what was built: a second run with the
same table entry and the same Go does nothing. One line is printed per program. Builds run at nice 10
(the machine is small and shared); two runs at once wait for each other, program by program.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path(__file__).with_suffix(".toml")
FILES = Path(__file__).with_name("gobuild_files")
TOOLS = ROOT / ".tools"
BIN = TOOLS / "bin"
HELM_PLUGINS = TOOLS / "helm" / "plugins"
"""Where the helm plugins built here live: point HELM_PLUGINS at it (see helm_environment)."""
GO_FALLBACK = "/usr/local/go/bin/go"


@dataclass(frozen=True)
class Program:
    name: str
    module: str
    version: str
    package: str
    output: str
    dest: str = "bin"
    ldflags: tuple[str, ...] = ()
    commit: str = ""
    replace: dict[str, str] = field(default_factory=dict)
    replace_local: str = ""
    require: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    toolchain: str = ""
    files: dict[str, str] = field(default_factory=dict)
    module_files: dict[str, str] = field(default_factory=dict)
    skip: str = ""
    image: str = ""
    add_files: dict[str, str] = field(default_factory=dict)
    manifest: str = ""
    files_only: bool = False

    @property
    def path(self) -> Path:
        """The built binary; for a files_only entry, the first of its files."""
        if self.files_only:
            return TOOLS / next(iter(self.module_files))
        return TOOLS / self.dest / self.output

    def expanded_ldflags(self) -> str:
        bare = self.version.removeprefix("v")
        major, minor, *_ = bare.split(".")
        values = {"version": self.version, "version_bare": bare, "major": major, "minor": minor, "commit": self.commit}
        return " ".join(flag.format(**values) for flag in self.ldflags)


KEYS = {"module", "version", "package", "output", "dest", "ldflags", "commit", "replace", "require", "tags", "env"}
KEYS |= {"toolchain", "files", "skip", "replace_local", "extends", "module_files", "image", "add_files", "manifest"}
KEYS |= {"files_only"}


def load(table: Path = TABLE) -> dict[str, Program]:
    """The table, checked: unknown keys and missing module/version are errors, not ignored."""
    programs = {}
    entries = tomllib.loads(table.read_text())
    for name, own in entries.items():
        unknown = set(own) - KEYS
        if unknown:
            raise ValueError(f"{table.name} [{name}]: unknown keys {sorted(unknown)}")
        base = own.get("extends")
        if base is not None and (base not in entries or "extends" in entries[base]):
            raise ValueError(f"{table.name} [{name}]: extends names no plain entry: {base!r}")
        entry = {**entries[base], "output": name, **own} if base else own
        if "module" not in entry or "version" not in entry:
            raise ValueError(f"{table.name} [{name}]: module and version are required")
        programs[name] = Program(
            name=name,
            module=entry["module"],
            version=entry["version"],
            package=entry.get("package", entry["module"]),
            output=entry.get("output", name),
            dest=entry.get("dest", "bin"),
            ldflags=tuple(entry.get("ldflags", ())),
            commit=entry.get("commit", ""),
            replace=dict(entry.get("replace", {})),
            replace_local=entry.get("replace_local", ""),
            require=dict(entry.get("require", {})),
            tags=tuple(entry.get("tags", ())),
            env=dict(entry.get("env", {})),
            toolchain=entry.get("toolchain", ""),
            files=dict(entry.get("files", {})),
            module_files=dict(entry.get("module_files", {})),
            skip=entry.get("skip", ""),
            image=entry.get("image", ""),
            add_files=dict(entry.get("add_files", {})),
            manifest=entry.get("manifest", ""),
            files_only=bool(entry.get("files_only", False)),
        )
        if programs[name].files_only and not programs[name].module_files:
            raise ValueError(f"{table.name} [{name}]: files_only needs module_files")
    return programs


def go_command() -> str:
    return shutil.which("go") or GO_FALLBACK


def go_environment(program: Program) -> dict[str, str]:
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": program.toolchain or "local"}
    env.update(program.env)
    return env


def go_version(program: Program) -> str:
    result = subprocess.run(
        [go_command(), "env", "GOVERSION"], env=go_environment(program), capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def helm_environment() -> dict[str, str]:
    """The environment under which helm (and helmfile's helm) finds the plugins built here."""
    return {"HELM_PLUGINS": str(HELM_PLUGINS)}


class BuildError(Exception):
    pass


def stamp_of(program: Program, go: str) -> str:
    files = {target: (FILES / source).read_text() for target, source in sorted(program.files.items())}
    added = {path: (FILES / source).read_text() for path, source in sorted(program.add_files.items())}
    manifest = (FILES / program.manifest).read_text() if program.manifest else ""
    record = {**program.__dict__, "go": go, "files": files, "add_files": added, "manifest": manifest}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=list).encode()).hexdigest()


def run_tool(command: list[str], program: Program, cwd: Path, described: str) -> str:
    """Run a build tool in the program's Go environment; its output, or a BuildError naming ``described``."""
    result = subprocess.run(command, cwd=cwd, env=go_environment(program), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{described}:\n{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def run_go(arguments: list[str], program: Program, cwd: Path) -> None:
    run_tool([go_command(), *arguments], program, cwd, f"go {' '.join(arguments)}")


def module_download(program: Program, work: Path) -> dict[str, str]:
    """`go mod download -json` of the program's module at its version: where its go.mod and its tree are."""
    version = f"{program.module}@{program.version}"
    output = run_tool([go_command(), "mod", "download", "-json", version], program, work, f"go mod download {version}")
    download: dict[str, str] = json.loads(output)
    return download


def local_replaces(program: Program, work: Path) -> dict[str, str]:
    """The module's own replaces by a directory of its repository, each as the same path at replace_local.

    k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) by directories of its own tree, which a
    module that requires it cannot see: they are re-declared at the matching release, read from the
    module's go.mod at that version, so the list is never copied by hand.
    """
    if not program.replace_local:
        return {}
    go_mod = module_download(program, work)["GoMod"]
    edit = subprocess.run(
        [go_command(), "mod", "edit", "-json", go_mod],
        cwd=work,
        env=go_environment(program),
        capture_output=True,
        text=True,
        check=True,
    )
    replaces = json.loads(edit.stdout).get("Replace") or []
    return {
        item["Old"]["Path"]: f"{item['Old']['Path']} {program.replace_local}"
        for item in replaces
        if not item["New"].get("Version")
    }


def add_files(program: Program, work: Path) -> None:
    """Build from a copy of the module's tree with the table's files added, in place of the module.

    A module is its repository's Go source: files a project's own build makes first (Alertmanager's web UI,
    embedded from ui/app/dist, is made by npm) are not in it, and without them the program does not compile.
    go build's -overlay cannot add them: it refuses paths in the module cache.
    """
    tree = work / "module"
    shutil.copytree(module_download(program, work)["Dir"], tree, copy_function=shutil.copyfile)
    for directory in [tree, *(path for path in tree.rglob("*") if path.is_dir())]:
        directory.chmod(0o755)  # the module cache's directories are read-only, and copytree keeps that
    for path, source in program.add_files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / source, tree / path)
    run_go(["mod", "edit", f"-replace={program.module}=./module"], program, work)


def build_distribution(program: Program, work: Path, built: Path) -> None:
    """A collector distribution: the OpenTelemetry Collector Builder (the table's module, at its version) writes the
    sources of exactly the manifest's components, which are then built as the builder builds them (-trimpath,
    -ldflags=-s -w).

    The module the builder would write is written here instead, so that it can be tidied with -e: components'
    tests import modules the proxy here does not serve (k8sattributesprocessor's pkg/xk8stest), which a build of
    the program never needs, and the builder's own `go mod tidy` stops at them.
    """
    builder = work / "ocb"
    run_go(["build", "-trimpath", "-o", str(builder), program.package], program, work)
    manifest = yaml.safe_load((FILES / program.manifest).read_text())
    distribution = work / "distribution"
    manifest["dist"].update(output_path=str(distribution), go=go_command())
    (work / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    run_tool(
        [str(builder), "--config", str(work / "manifest.yaml"), "--skip-get-modules", "--skip-compilation"],
        program,
        work,
        f"ocb --config {program.manifest}",
    )
    sections = ("providers", "converters", "connectors", "extensions", "receivers", "exporters", "processors")
    requires = [item["gomod"] for section in sections for item in manifest.get(section) or []]
    requires.append(f"go.opentelemetry.io/collector/otelcol {program.version}")
    lines = "".join(f"\t{line}\n" for line in requires)
    (distribution / "go.mod").write_text(f"module {manifest['dist']['module']}\n\ngo 1.25\n\nrequire (\n{lines})\n")
    run_go(["mod", "tidy", "-e"], program, distribution)
    run_go(["build", "-trimpath", "-ldflags=-s -w", "-o", str(built), "."], program, distribution)


def build_one(program: Program) -> str:
    """Build one program unless its stamp says it is already built; return its line."""
    label = f"{program.name:<16} {program.module}@{program.version}"
    if program.skip:
        return f"{label}  not built: {program.skip}"
    work = TOOLS / "build" / program.name
    stamp_file = TOOLS / "stamps" / f"{program.name}.sha256"
    work.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    with open(work.parent / f"{program.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        go = go_version(program)
        stamp = stamp_of(program, go)
        if program.path.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
            return f"{label}  up to date: {program.path.relative_to(ROOT)}"
        started = time.monotonic()
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        run_go(["mod", "init", f"cnfs-interposer.tools/{program.name}"], program, work)
        if not program.files_only:
            build_program(program, work)
        if program.module_files:
            tree = Path(module_download(program, work)["Dir"])
            for target, source in program.module_files.items():
                (TOOLS / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tree / source, TOOLS / target)
        stamp_file.write_text(stamp)
        verb = "copied" if program.files_only else "built"
        return f"{label}  {verb} in {time.monotonic() - started:.0f} s ({go}): {program.path.relative_to(ROOT)}"


def build_program(program: Program, work: Path) -> None:
    """Build the program in its throwaway module (``work``), with its files beside it."""
    for old, new in {**local_replaces(program, work), **program.replace}.items():
        new_path, _, new_version = new.partition(" ")
        run_go(
            ["mod", "edit", f"-replace={old}={new_path}@{new_version}" if new_version else f"-replace={old}={new}"],
            program,
            work,
        )
    pins = [f"{path}@{version}" for path, version in program.require.items()]
    run_go(["get", "-tool", f"{program.package}@{program.version}", *pins], program, work)
    program.path.parent.mkdir(parents=True, exist_ok=True)
    built = program.path.with_name(program.path.name + ".new")
    if program.manifest:
        build_distribution(program, work, built)
    else:
        command = ["build", "-trimpath", "-o", str(built), "-ldflags", program.expanded_ldflags()]
        if program.add_files:
            add_files(program, work)
        if program.tags:
            command += ["-tags", ",".join(program.tags)]
        run_go([*command, program.package], program, work)
    built.replace(program.path)
    for target, source in program.files.items():
        (TOOLS / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES / source, TOOLS / target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gobuild", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="programs of tools/gobuild.toml (default: all)")
    parser.add_argument("--list", action="store_true", help="print the table and build nothing")
    arguments = parser.parse_args(argv)
    programs = load()
    unknown = [name for name in arguments.names if name not in programs]
    if unknown:
        parser.error(f"not in {TABLE.name}: {', '.join(unknown)}; known: {', '.join(programs)}")
    selected = [programs[name] for name in arguments.names or programs]
    if arguments.list:
        for program in selected:
            print(f"{program.name:<16} {program.module}@{program.version}  {program.path.relative_to(ROOT)}")
        return 0
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))
    failed = 0
    for program in selected:
        try:
            print(build_one(program), flush=True)
        except BuildError as error:
            failed += 1
            print(f"{program.name:<16} {program.module}@{program.version}  FAILED: {error}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
