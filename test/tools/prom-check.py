#!/usr/bin/env python3
"""prom-check: asks a running Prometheus whether ordertrack's monitoring expressions have data.

Usage:
  prom-check.py config REPO_PROMETHEUS_YML OUT_YML RULES_YML [--alertmanager=HOST:PORT] JOB=HOST:PORT[,HOST:PORT]...
      writes OUT_YML: the repository's scrape configuration with each job's discovery replaced
      by static targets (its relabelling kept), 1 s scrapes and rule evaluations, RULES_YML as
      its rule file, and alerts sent to the Alertmanager given (else none). Fails if a job of
      the repository's file has no targets given, or a given job is unknown.
  prom-check.py rules RULES_YML OUT_YML
      writes OUT_YML: the rules with every "for" shortened to 5 s and the WAL threshold of
      OtCdcRetainedWalHigh lowered to 0 bytes, so a test sees them fire in seconds.
  prom-check.py query URL < EXPRS
      EXPRS is scripts/check-monitoring --exprs output (KIND<TAB>WHERE<TAB>EXPR lines).
      A dashboard expression must return at least one series. A rule expression mostly
      returns nothing while all is well (it compares with a threshold), so each metric it
      selects must return a series instead, with its label matchers where a healthy run has
      such series (dead letters), else with each label the matchers name (no 5xx in a
      healthy run, but the code label must exist); and every rule must have been evaluated
      without error. Prints each failure; exits 1 if any.
"""
import json
import re
import sys
import urllib.parse
import urllib.request

import yaml


def make_config(src, out, rules, pairs):
    conf = yaml.safe_load(open(src))
    targets, am = {}, None
    for p in pairs:
        if p.startswith("--alertmanager="):
            am = p.split("=", 1)[1]
            continue
        job, _, addrs = p.partition("=")
        targets[job] = addrs.split(",")
    jobs = [j["job_name"] for j in conf["scrape_configs"]]
    missing = [j for j in jobs if j not in targets]
    unknown = [j for j in targets if j not in jobs]
    if missing or unknown:
        sys.exit("jobs without test targets: %s; targets for unknown jobs: %s" % (missing, unknown))
    for j in conf["scrape_configs"]:
        for k in [k for k in j if k.endswith("_sd_configs")]:
            del j[k]
        j["static_configs"] = [{"targets": targets[j["job_name"]]}]
        j["scrape_interval"] = "1s"
        j["scrape_timeout"] = "1s"
    conf["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    conf["rule_files"] = [rules]
    conf.pop("alerting", None)
    if am:
        conf["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [am]}]}]}
    yaml.safe_dump(conf, open(out, "w"), sort_keys=False)


def fast_rules(src, out):
    rules = yaml.safe_load(open(src))
    for g in rules["groups"]:
        for r in g["rules"]:
            if "for" in r:
                r["for"] = "5s"
            if r.get("alert") == "OtCdcRetainedWalHigh":
                assert "> 1073741824" in r["expr"]
                r["expr"] = r["expr"].replace("> 1073741824", "> 0")
    yaml.safe_dump(rules, open(out, "w"), sort_keys=False)


def get(url, path, **params):
    q = urllib.parse.urlencode(params)
    with urllib.request.urlopen("%s%s?%s" % (url, path, q), timeout=10) as r:
        return json.load(r)


# A metric selector in a rule: a name of ours, with its label matchers if it has any.
SELECTOR = re.compile(r'\b((?:ot|process)_[a-zA-Z0-9_]+|up)\b(\{[^}]*\})?')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)')


def series(url, e):
    """How many series e returns, or -1 and the error."""
    try:
        r = get(url, "/api/v1/query", query=e)
        return (len(r["data"]["result"]), None) if r.get("status") == "success" else (-1, r.get("error"))
    except Exception as ex:  # an HTTP 400 is a query Prometheus refused
        return -1, str(ex)


def selector_ok(url, name, matchers):
    """The selector has series, or the metric has series carrying each label it matches on."""
    if series(url, name + matchers)[0] > 0:
        return True
    if not matchers or series(url, name)[0] <= 0:
        return False
    return all(series(url, '%s{%s!=""}' % (name, l))[0] > 0 for l in LABEL.findall(matchers))


def query(url):
    failures = 0
    for line in sys.stdin:
        kind, where, expr = line.rstrip("\n").split("\t", 2)
        if kind == "dashboard":
            n, err = series(url, expr)
            if n <= 0:
                failures += 1
                print("%s %s: %s: %s" % (kind, where, "no series" if n == 0 else err, expr))
            continue
        for m in sorted({(m.group(1), m.group(2) or "") for m in SELECTOR.finditer(expr)}):
            if not selector_ok(url, *m):
                failures += 1
                print("%s %s: no series: %s" % (kind, where, m[0] + m[1]))
    for g in get(url, "/api/v1/rules")["data"]["groups"]:
        for rule in g["rules"]:
            if rule.get("health") != "ok":
                failures += 1
                print("rule %s: evaluation %s: %s" % (rule["name"], rule.get("health"), rule.get("lastError", "")))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "config":
        make_config(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    elif len(sys.argv) == 4 and sys.argv[1] == "rules":
        fast_rules(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "query":
        query(sys.argv[2])
    else:
        sys.exit(__doc__)
