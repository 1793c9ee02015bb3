"""Dashboards and alert rules as code: fresh, valid for Grafana and promtool, and alive on a real stack."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import alerts.__main__ as alert_files
import dashboards.__main__ as dashboard_files
from alerts.config import AlertConfig
from alerts.rules import alerting_rules, rule_groups
from interposer.local.ports import free_port
from interposer.local.stack import rendered

from .alertmanager import running_alertmanager
from .conftest import MountFactory, require, require_command, wait_for
from .prometheus import running_prometheus
from .servers import built_program

REPOSITORY = Path(__file__).resolve().parent.parent
RULE_TESTS = REPOSITORY / "alerts" / "tests" / "rules.test.yaml"
TYPECHECK = REPOSITORY / "dashboards" / "typecheck"
RULES = alert_files.OUTPUT / alert_files.RULE_FILE


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPOSITORY)


def test_generated_dashboards_and_rules_are_fresh() -> None:
    for path, text in dashboard_files.render().items():
        assert path.read_text() == text, f"{path} is stale: run ./tasks.sh generate"
    for name, text in alert_files.render().items():
        assert (alert_files.OUTPUT / name).read_text() == text, f"{name} is stale: run ./tasks.sh generate"
    committed = {path.name for path in dashboard_files.OUTPUT.glob("*.json")}
    assert committed == set(dashboard_files.DASHBOARDS), "a dashboard file no generator writes"


def test_dashboards_type_check_against_grafana_schema() -> None:
    """Each dashboard, as a literal, must be a @grafana/schema Dashboard (enums as their string values)."""
    require((TYPECHECK / "node_modules" / "@grafana" / "schema").is_dir(), "npm packages in dashboards/typecheck")
    node = require_command("node")
    lines = [
        'import type { AnnotationQuery, Dashboard, DataQuery } from "@grafana/schema";',
        "type Json<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Json<U>[]",
        "  : T extends object ? { [K in keyof T]: Json<T[K]> } : T;",
        # @grafana/schema types an annotation's query as a bare DataQuery; the Prometheus data source's
        # annotation support (packages/grafana-prometheus/src/annotations.ts) reads these fields besides.
        "type PrometheusAnnotation = Json<Omit<AnnotationQuery, 'target'>> & { target: Json<DataQuery> & "
        "{ expr: string }; titleFormat?: string; textFormat?: string; tagKeys?: string };",
        "type Checked = Omit<Json<Dashboard>, 'annotations'> & { annotations?: { list?: PrometheusAnnotation[] } };",
    ]
    for index, path in enumerate(sorted(dashboard_files.OUTPUT.glob("*.json"))):
        lines.append(f"export const dashboard{index}: Checked = {path.read_text().strip()};")
    check = TYPECHECK / "dashboards.generated.ts"
    check.write_text("\n".join(lines) + "\n")
    try:
        result = run(node, str(TYPECHECK / "node_modules" / "typescript" / "bin" / "tsc"), "-p", str(TYPECHECK))
    finally:
        check.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = built_program("promtool")
    checked = run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested_alerts == {rule["alert"] for rule in alerting_rules(AlertConfig())["rules"]}


def test_every_alert_is_complete_and_has_a_runbook() -> None:
    runbooks = (REPOSITORY / "docs" / "runbooks.md").read_text()
    for rule in alerting_rules(AlertConfig())["rules"]:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys()
        anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
        assert f"## {rule['alert']}\n" in runbooks
        assert anchor == rule["alert"].lower()


def test_thresholds_and_selectors_can_be_overridden(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("error_ratio: 0.2\nselector: 'cluster=\"prod\"'\nlatency_p99_seconds: 2\n")
    files = alert_files.render(overrides)
    rules = files[alert_files.RULE_FILE]
    assert "cnfs:fuse_failures:ratio > 0.2" in rules
    assert 'cluster="prod"' in rules
    assert "cnfs:fuse_operation_duration_seconds:p99 > 2" in rules
    overrides.write_text("error_ratio: lots\nthresholds: {}\n")
    result = run(sys.executable, "-m", "alerts", "--config", str(overrides), "--output", str(tmp_path))
    assert result.returncode != 0
    assert "error_ratio: Input should be a valid number" in result.stderr
    assert "thresholds: unknown field" in result.stderr


def _substituted(expr: str) -> str:
    """A panel query as Grafana runs it with every variable on All and a one-minute rate window."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace('=~"$namespace"', '=~".*"')
        .replace('=~"$pod"', '=~".*"')
        .replace('=~"$volume"', '=~".*"')
        .replace('=~"$operation"', '=~".*"')
    )


def _panel_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in sorted(dashboard_files.OUTPUT.glob("*.json")):
        board: dict[str, Any] = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                queries.append((board["title"], panel["title"], target["expr"]))
    return queries


COLLECTOR_ONLY = "otelcol_"
"""Series only the OpenTelemetry Collector exports; no collector runs on this machine (see docs/testing.md)."""


def test_every_panel_has_data_and_an_injected_fault_alert_reaches_alertmanager(
    mount_factory: MountFactory, scratch: Path
) -> None:
    port = free_port()
    config = scratch / "config.yaml"
    config.write_text(
        f"metrics: {{exporters: [prometheus], prometheus_port: {port}}}\n"
        "cache: {direct_io: true}\n"
        "throttle: {read_iops: {rate: 200, burst: 1}}\n"
        "faults:\n  rules:\n"
        "    - match: {paths: ['/flaky*'], operations: [read]}\n      action: {errno: EIO}\n"
        "    - match: {paths: ['/slow*'], operations: [read]}\n"
        "      action: {latency: {kind: fixed, seconds: 0.002}}\n"
    )
    mount = mount_factory(args=["--config", str(config)])
    with (
        running_alertmanager(scratch) as alertmanager,
        running_prometheus(
            scratch, {"interposer": f"127.0.0.1:{port}"}, rule_files=(RULES,), alertmanager=alertmanager.address
        ) as prometheus,
    ):
        started = time.time()
        prometheus.wait_for_scrape_after(started, "interposer")  # Prometheus's first scrape comes seconds late
        root = mount.mountpoint
        for name in ("data", "flaky", "slow"):
            (mount.backing / name).write_bytes(b"x" * 8192)
        (root / "dir").mkdir()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # a few seconds of mixed work, so rates have samples
            for name in ("data", "flaky", "slow"):
                with contextlib.suppress(OSError):  # flaky fails by design
                    (root / name).read_bytes()
            (root / "dir" / "new").write_bytes(b"y" * 4096)
            (root / "dir" / "new").unlink()
            assert not (root / "missing").exists()
        prometheus.wait_for_scrape_after(time.time(), "interposer")

        dead = []
        for dashboard, panel, expr in _panel_queries():
            if COLLECTOR_ONLY in expr:
                continue
            if not prometheus.query(_substituted(expr)):
                dead.append(f"{dashboard} / {panel}: {expr}")
        assert not dead, "panels without data:\n" + "\n".join(dead)

        def delivered() -> set[str]:
            return {
                alert["labels"]["alertname"] for alert in alertmanager.webhook.alerts() if alert["status"] == "firing"
            }

        wait_for(
            lambda: "CnfsInterposerFaultInjectionActive" in delivered(),
            timeout=60,
            what="the fault alert at the webhook",
        )
        alert = next(
            a for a in alertmanager.webhook.alerts() if a["labels"]["alertname"] == "CnfsInterposerFaultInjectionActive"
        )
        assert alert["labels"]["fuse_mountpoint"] == str(mount.mountpoint)
        assert alert["labels"]["severity"] == "info"
        assert alert["annotations"]["runbook_url"].endswith("#cnfsinterposerfaultinjectionactive")
        assert time.time() - started < 120


def test_bad_alert_overrides_name_the_alert_fields_and_exit_2(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("error_ratio_for: ten minutes\nerror_ratoi: 0.1\n")
    result = run(sys.executable, "-m", "alerts", "--config", str(overrides), "--output", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "error_ratio_for: 'ten minutes' is not a Prometheus duration" in result.stderr
    assert f"error_ratoi: unknown field; allowed fields: {', '.join(AlertConfig.model_fields)}" in result.stderr
    assert "log_level" not in result.stderr  # the interposer's own fields are not the alerts'
    assert not (tmp_path / "out").exists()


def test_alert_durations_are_exactly_what_promtool_accepts(tmp_path: Path) -> None:
    """The duration pattern is held to real promtool: rules built with each value (unvalidated) must pass
    promtool exactly when the config model accepts the value."""
    promtool = built_program("promtool")
    for value in ("10m", "1h30m", "90s", "1d", "500ms", "ten minutes", "10 m", "1.5h", "10M", "-5m", ""):
        try:
            AlertConfig.model_validate({"error_ratio_for": value})
            accepted = True
        except ValidationError:
            accepted = False
        rules = tmp_path / "rules.yaml"
        rules.write_text(yaml.safe_dump(rule_groups(AlertConfig.model_construct(error_ratio_for=value))))
        checked = run(promtool, "check", "rules", str(rules))
        assert (checked.returncode == 0) == accepted, f"{value!r}: model {accepted}, promtool\n{checked.stdout}"


def test_expected_failures_never_count_in_the_error_ratio(tmp_path: Path) -> None:
    """The kernel's getxattr probe before each write (ENODATA) and a lookup's ENOENT stay out of the error ratio
    even when benign_errnos no longer names them: names.EXPECTED_FAILURES is not an override."""
    promtool = built_program("promtool")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(AlertConfig(benign_errnos=()))))
    count = "fuse_operation_duration_seconds_count"
    series = {
        # Ratios of 1/2: Prometheus 3's promtool compares samples exactly, and 10/100 of two rates is 0.0999...
        f'{count}{{fuse_operation_name="write"}}': "0+100x10",
        f'{count}{{fuse_operation_name="write", error_type="EIO"}}': "0+100x10",
        f'{count}{{fuse_operation_name="getxattr", error_type="ENODATA"}}': "0+100x10",
        f'{count}{{fuse_operation_name="lookup", error_type="ENOENT"}}': "0+100x10",
        f'{count}{{fuse_operation_name="lookup", error_type="EACCES"}}': "0+100x10",
    }
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": [
                    {
                        "expr": "cnfs:fuse_failures:ratio",
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": 'cnfs:fuse_failures:ratio{fuse_operation_name="write"}', "value": 0.5},
                            {"labels": 'cnfs:fuse_failures:ratio{fuse_operation_name="lookup"}', "value": 0.5},
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    tested = run(promtool, "test", "rules", str(tmp_path / "test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_error_panels_leave_the_expected_failures_out(tmp_path: Path) -> None:
    """The error-ratio, errors-by-errno and organic-error panels, evaluated by promtool on synthetic series: a
    write workload's getxattr probes (ENODATA) and a lookup's ENOENT are not errors there."""
    promtool = built_program("promtool")
    panels = {
        panel["title"]: panel["targets"]
        for path in dashboard_files.OUTPUT.glob("*.json")
        for panel in json.loads(path.read_text())["panels"]
    }

    def query(title: str, legend: str = "") -> str:
        (expr,) = [target["expr"] for target in panels[title] if target["legendFormat"] in (legend, "{{error_type}}")]
        return re.sub(r"\$(namespace|pod|volume|operation)\b", ".*", expr.replace("$__rate_interval", "5m"))

    count = "fuse_operation_duration_seconds_count"
    series = {  # per second: 10 writes, 1 of them fails with EIO; 10 probes, 5 lookups that find nothing
        f'{count}{{fuse_operation_name="write"}}': "0+540x10",
        f'{count}{{fuse_operation_name="write", error_type="EIO"}}': "0+60x10",
        f'{count}{{fuse_operation_name="getxattr", error_type="ENODATA"}}': "0+600x10",
        f'{count}{{fuse_operation_name="lookup", error_type="ENOENT"}}': "0+300x10",
    }
    expected = [
        (query("Error ratio"), "{}", 1 / 25),
        (query("Errors/s by errno"), '{error_type="EIO"}', 1.0),
        (query("Injected and organic errors/s", "organic"), "{}", 1.0),
    ]
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "10m", "exp_samples": [{"labels": labels, "value": value}]}
                    for expr, labels, value in expected
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    tested = run(promtool, "test", "rules", str(tmp_path / "test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_live_control_annotation_marks_each_apply_and_revert(tmp_path: Path) -> None:
    """The Faults dashboard's annotation query, evaluated by promtool on a node plugin's counter: an event with
    its action and result wherever a VolumeExperiment was applied or reverted, nothing where none was."""
    promtool = built_program("promtool")
    [annotation] = json.loads((dashboard_files.OUTPUT / "faults-and-throttling.json").read_text())["annotations"][
        "list"
    ]
    expr = annotation["target"]["expr"].replace("$__rate_interval", "4m")  # 4 scrapes: Grafana's least
    changes = "cnfs_csi_live_control_changes_total"
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [  # one apply at minute 3, one revert at minute 12
                    {"series": f'{changes}{{action="apply", result="ok"}}', "values": "0 0 0 1+0x12"},
                    {"series": f'{changes}{{action="revert", result="ok"}}', "values": "0+0x11 1+0x3"},
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "3m",
                        "exp_samples": [{"labels": '{action="apply", result="ok"}', "value": 1}],
                    },
                    {"expr": expr, "eval_time": "10m", "exp_samples": []},
                    {
                        "expr": expr,
                        "eval_time": "12m",
                        "exp_samples": [{"labels": '{action="revert", result="ok"}', "value": 1}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    tested = run(promtool, "test", "rules", str(tmp_path / "test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert set(annotation["tagKeys"].split(",")) == {"action", "result"}


def test_the_links_to_jaeger_open_where_the_documented_port_forward_serves_it() -> None:
    """The links open in the user's browser, which reaches Jaeger only through the access path docs/kubernetes.md
    gives (a port-forward to localhost), never through a cluster Service name that only Grafana's server
    resolves."""
    guide = (REPOSITORY / "docs" / "kubernetes.md").read_text()
    [(local_port, service_port)] = re.findall(r"port-forward svc/jaeger (\d+):(\d+)", guide)
    jaeger = rendered("default", "jaeger.yaml")["extensions"]["jaeger_query"]["http"]["endpoint"]
    assert jaeger.rsplit(":", 1)[1] == service_port, "the guide forwards to the port Jaeger's UI listens on"
    expected = f"http://localhost:{local_port}"
    for path in sorted(dashboard_files.OUTPUT.glob("*.json")):
        dashboard = json.loads(path.read_text())
        [variable] = [item for item in dashboard["templating"]["list"] if item["name"] == "jaeger"]
        assert (variable["query"], variable["current"]["value"]) == (expected, expected), path.name
        urls = re.findall(r'"url": "([^"]*)"', path.read_text())
        assert not [url for url in urls if "jaeger" in url and not url.startswith("${jaeger}")], path.name
