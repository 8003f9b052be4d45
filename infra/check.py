"""Offline checks of infra/ and cloudbuild/ (run by ./check, which installs what this needs).

There is no terraform binary or provider download here, so this does what it can without them:

1. every *.tf file parses as HCL2 (python-hcl2);
2. every resource and data source type, argument and nested block exists in the schema of the
   provider it uses (hashicorp/google or, with `provider = google-beta`, hashicorp/google-beta),
   and required arguments are set. The schemas are those of provider 6.50.0, as generated into
   the @cdktf/provider-google{,-beta} npm packages (their index.js/index.d.ts per resource);
3. every var., local., data. and resource reference points at something declared, and a
   resource attribute read (`google_x.y.attr`) exists on that resource type;
4. firestore.indexes.json and the indexes in firestore.tf are the same, and so are the service
   environments in run.tf and environment.json (the contract with the Rust side);
5. cloudbuild/cloudbuild.yaml parses, its step ids and waitFor agree, its user substitutions are
   declared; cloudbuild/Dockerfile passes hadolint (when hadolint is on PATH).

Usage: python check.py INFRA_DIR CDKTF_GA_LIB CDKTF_BETA_LIB
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import yaml

META_ARGS = {"count", "for_each", "provider", "depends_on", "lifecycle", "provisioner", "connection"}

errors: list[str] = []
warnings: list[str] = []


def error(msg: str) -> None:
    errors.append(msg)


def unquote(s: str) -> str:
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


# --------------------------------------------------------------------------------------------
# Provider schemas from the cdktf packages
# --------------------------------------------------------------------------------------------

FUNC_RE = re.compile(r"^function (\w+)ToTerraform\(struct\) \{\n(.*?)^\}", re.M | re.S)
RET_RE = re.compile(r"return \{\n(.*?)\n\s*\};", re.S)
ENTRY_RE = re.compile(r"^\s+(\w+): (.*),$", re.M)
NESTED_RE = re.compile(r"(?<![\w.])([a-z]\w*)ToTerraform\b")
CAMEL_RE = re.compile(r"(?:struct\.|this\._)(\w+)")
IFACE_RE = re.compile(r"^export interface (\w+)(?: extends [\w.]+)? \{\n(.*?)^\}", re.M | re.S)
FIELD_RE = re.compile(r"^\s+readonly (\w+)(\??):", re.M)
CLASS_RE = re.compile(r"^export declare class (\w+) extends cdktf\.Terraform(?:Resource|DataSource)", re.M)
COMPUTED_RE = re.compile(r"get\w*Attribute\('(\w+)'\)")


class Node:
    def __init__(self) -> None:
        self.children: dict[str, Node | None] = {}  # None: a plain attribute
        self.required: set[str] = set()


class Schema:
    def __init__(self, lib: Path) -> None:
        self.lib = lib
        self.resources: dict[str, Path] = {}
        self.data: dict[str, Path] = {}
        for d in lib.iterdir():
            js = d / "index.js"
            if not js.is_file():
                continue
            head = js.read_text(errors="replace")
            m = re.search(r'\.tfResourceType = "([^"]+)"', head)
            if not m:
                continue
            (self.data if d.name.startswith("data-") else self.resources)[m.group(1)] = d
        self.cache: dict[tuple[str, str], tuple[Node, set[str]]] = {}

    def get(self, kind: str, tftype: str) -> tuple[Node, set[str]] | None:
        table = self.data if kind == "data" else self.resources
        if tftype not in table:
            return None
        key = (kind, tftype)
        if key not in self.cache:
            self.cache[key] = self._load(table[tftype])
        return self.cache[key]

    def _load(self, d: Path) -> tuple[Node, set[str]]:
        js = (d / "index.js").read_text()
        dts = (d / "index.d.ts").read_text()
        funcs = {m.group(1): m.group(2) for m in FUNC_RE.finditer(js)}
        ifaces = {m.group(1): m.group(2) for m in IFACE_RE.finditer(dts)}
        computed = set(COMPUTED_RE.findall(js))
        built: dict[str, Node] = {}

        def entries(body: str) -> list[tuple[str, str]]:
            r = RET_RE.search(body)
            return ENTRY_RE.findall(r.group(1)) if r else []

        def required(iface: str | None, ents: list[tuple[str, str]]) -> set[str]:
            if not iface or iface not in ifaces:
                return set()
            camel_to_snake = {}
            for snake, expr in ents:
                c = CAMEL_RE.search(expr)
                if c:
                    camel_to_snake[c.group(1)] = snake
            return {
                camel_to_snake.get(name, name)
                for name, opt in FIELD_RE.findall(ifaces[iface])
                if not opt
            }

        def node(ents: list[tuple[str, str]], iface: str | None) -> Node:
            n = Node()
            for snake, expr in ents:
                nested = NESTED_RE.search(expr)
                if nested and nested.group(1) in funcs and "hashMapper" not in expr:
                    n.children[snake] = build(nested.group(1))
                else:
                    n.children[snake] = None
            n.required = required(iface, ents)
            return n

        def build(fname: str) -> Node:
            if fname not in built:
                built[fname] = Node()  # placeholder against recursion
                built[fname] = node(entries(funcs[fname]), fname[0].upper() + fname[1:])
            return built[fname]

        top = re.search(r"synthesizeAttributes\(\) \{\n\s*return \{\n(.*?)\n\s*\};", js, re.S)
        cls = CLASS_RE.search(dts)
        top_entries = ENTRY_RE.findall(top.group(1)) if top else []
        root = node(top_entries, f"{cls.group(1)}Config" if cls else None)
        root.required.discard("id")
        return root, computed | set(root.children)


# --------------------------------------------------------------------------------------------
# Walking the configuration
# --------------------------------------------------------------------------------------------


def is_block_list(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(b, dict) and b.get("__is_block__") for b in v)


def walk(schema: Node, body: dict, where: str, top: bool) -> None:
    present = set()
    for key, val in body.items():
        if key in ("__is_block__", "__comments__", "__inline_comments__"):
            continue
        if top and key in META_ARGS:
            continue
        if key == "dynamic":
            for dyn in val:
                for raw, spec in dyn.items():
                    if raw in ("__is_block__", "__comments__", "__inline_comments__"):
                        continue
                    name = unquote(raw)
                    present.add(name)
                    extra = set(spec) - {"for_each", "iterator", "labels", "content", "__is_block__", "__comments__"}
                    if extra:
                        error(f"{where}: dynamic \"{name}\" has unknown keys {sorted(extra)}")
                    child = schema.children.get(name, "missing")
                    if child == "missing":
                        error(f"{where}: no block \"{name}\"")
                    elif child is None:
                        error(f"{where}: \"{name}\" is an attribute, not a block")
                    else:
                        for content in spec.get("content", []):
                            walk(child, content, f"{where}.{name}", False)
            continue
        present.add(key)
        if key not in schema.children:
            error(f"{where}: unknown argument or block \"{key}\"")
            continue
        child = schema.children[key]
        if is_block_list(val):
            if child is None:
                error(f"{where}: \"{key}\" is an attribute, written as a block")
            else:
                for b in val:
                    walk(child, b, f"{where}.{key}", False)
        elif child is not None and isinstance(val, dict):
            error(f"{where}: \"{key}\" is a block, written as an attribute (`{key} = {{...}}`)")
    for req in sorted(schema.required - present):
        error(f"{where}: required \"{req}\" is not set")


def strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)


VAR_RE = re.compile(r"(?<![\w.])var\.(\w+)")
LOCAL_RE = re.compile(r"(?<![\w.])local\.(\w+)")
DATA_RE = re.compile(r"(?<![\w.])data\.(\w+)\.(\w+)")
RES_RE = re.compile(r"(?<![\w.\-/])(google(?:_\w+)+)\.([A-Za-z_][\w-]*)(\[[^\]]*\])?(?:\.(\w+))?")


def check_terraform(infra: Path, ga: Schema, beta: Schema) -> None:
    docs = {}
    for tf in sorted(infra.glob("*.tf")):
        try:
            with tf.open() as f:
                docs[tf.name] = hcl2.load(f)
        except Exception as e:  # noqa: BLE001 - any parse failure is the finding
            error(f"{tf.name}: does not parse: {e}")
    variables, locals_, resources, datas = set(), set(), {}, {}
    for doc in docs.values():
        for v in doc.get("variable", []):
            variables.update(unquote(k) for k in v if k != "__is_block__")
        for l in doc.get("locals", []):
            locals_.update(k for k in l if k != "__is_block__")
        for r in doc.get("resource", []):
            for t, named in r.items():
                for n, body in named.items():
                    key = (unquote(t), unquote(n))
                    if key in resources:
                        error(f"resource {key[0]}.{key[1]} declared twice")
                    resources[key] = body
        for d in doc.get("data", []):
            for t, named in d.items():
                for n, body in named.items():
                    datas[(unquote(t), unquote(n))] = body

    def schema_for(kind: str, tftype: str, body: dict):
        provider = body.get("provider", "google")
        if isinstance(provider, str) and "google-beta" in provider:
            return beta.get(kind, tftype), "google-beta"
        return ga.get(kind, tftype), "google"

    for (t, n), body in resources.items():
        sch, prov = schema_for("resource", t, body)
        if sch is None:
            other = ga if prov == "google-beta" else beta
            hint = " (it exists in the other provider)" if other.get("resource", t) else ""
            error(f"resource {t}.{n}: no such resource type in {prov} 6.50{hint}")
            continue
        walk(sch[0], body, f"{t}.{n}", True)
    for (t, n), body in datas.items():
        sch, prov = schema_for("data", t, body)
        if sch is None:
            error(f"data {t}.{n}: no such data source in {prov} 6.50")
            continue
        walk(sch[0], body, f"data.{t}.{n}", True)

    used_vars = set()
    for name, doc in docs.items():
        for s in strings(doc):
            for v in VAR_RE.findall(s):
                used_vars.add(v)
                if v not in variables:
                    error(f"{name}: var.{v} is not declared")
            for l in LOCAL_RE.findall(s):
                if l not in locals_:
                    error(f"{name}: local.{l} is not declared")
            for t, n in DATA_RE.findall(s):
                if (t, n) not in datas:
                    error(f"{name}: data.{t}.{n} is not declared")
            for t, n, _idx, attr in RES_RE.findall(s):
                if (t, n) not in resources:
                    error(f"{name}: {t}.{n} is not declared")
                    continue
                if attr:
                    sch, prov = schema_for("resource", t, resources[(t, n)])
                    if sch and attr not in sch[1]:
                        error(f"{name}: {t}.{n}.{attr}: {t} has no attribute \"{attr}\" in {prov}")
    for v in sorted(variables - used_vars):
        warnings.append(f"variable \"{v}\" is declared but never used")

    check_firestore(infra, docs.get("firestore.tf", {}))
    check_environment(infra, docs.get("run.tf", {}))
    check_url_map(infra)
    check_deadlines(docs.get("run.tf", {}), docs.get("pubsub.tf", {}))


def check_deadlines(run: dict, pubsub: dict) -> None:
    """The worker's longest path, a deploy inside a Pub/Sub push, fits every deadline around it:
    the revision wait < the ack deadline = the worker's request timeout <= Pub/Sub's 600 s
    maximum < cleanup's deploy timeout, and both push subscriptions use that ack deadline."""

    def one(value):
        # python-hcl2 gives attributes as one-element lists, strings with their quotes.
        while isinstance(value, list) and len(value) == 1:
            value = value[0]
        return unquote(value) if isinstance(value, str) else value

    locals_ = {}
    for l in run.get("locals", []):
        locals_.update({k: one(v) for k, v in l.items() if k != "__is_block__"})
    try:
        deadline = int(locals_["worker_deadline"])
        wait = int(locals_["deploy_wait"])
    except (KeyError, TypeError, ValueError):
        error("run.tf: locals worker_deadline and deploy_wait (seconds) are missing")
        return
    if not wait + 30 <= deadline <= 600:
        error(f"run.tf: deploy_wait {wait} s + 30 s must fit worker_deadline {deadline} s (<= 600)")
    worker = one((locals_.get("function_settings") or {}).get("worker", {}))
    if one(worker.get("timeout")) != "${local.worker_deadline}s":
        error(f"run.tf: the worker's timeout is {worker.get('timeout')!r}, not worker_deadline")
    cleanup = json.dumps((locals_.get("function_env") or {}).get("cleanup", ""))
    found = re.search(r"RUNWAY_DEPLOY_TIMEOUT_SECS\\?['\"]?\s*[:=]\s*\\?['\"](\d+)", cleanup)
    if not found or int(found.group(1)) <= deadline:
        error("run.tf: cleanup's RUNWAY_DEPLOY_TIMEOUT_SECS must exceed worker_deadline")
    pushes = 0
    for r in pubsub.get("resource", []):
        subscriptions = {unquote(t): named for t, named in r.items()}
        for name, body in subscriptions.get("google_pubsub_subscription", {}).items():
            if not body.get("push_config"):
                continue
            pushes += 1
            if one(body.get("ack_deadline_seconds")) != "${local.worker_deadline}":
                error(f"pubsub.tf: push subscription {unquote(name)} must wait worker_deadline")
    if pushes < 2:
        error(f"pubsub.tf: expected the worker's two push subscriptions, found {pushes}")


ENV_NAME_RE = re.compile(r"\b([A-Z][A-Z0-9_]*)\s*=(?!=)")
LOCAL_REF_RE = re.compile(r"local\.(\w+)")


def check_environment(infra: Path, doc: dict) -> None:
    """run.tf's function_env / function_secret_env name exactly what environment.json lists."""
    locals_ = {}
    for l in doc.get("locals", []):
        locals_.update({k: v for k, v in l.items() if k != "__is_block__"})

    def names(expr, seen=()) -> set[str]:
        text = json.dumps(expr)
        found = set(ENV_NAME_RE.findall(text))
        if isinstance(expr, dict):  # a literal object: its keys are the names
            found |= {k for k in expr if re.fullmatch(r"[A-Z][A-Z0-9_]*", k)}
        for ref in LOCAL_REF_RE.findall(text):
            if ref.endswith("_env") and ref in locals_ and ref not in seen:
                found |= names(locals_[ref], seen + (ref,))
        return found

    contract = json.loads((infra / "environment.json").read_text())
    for kind, local in (("plain", "function_env"), ("secret", "function_secret_env")):
        table = {unquote(k): v for k, v in locals_.get(local, {}).items()}
        for fn, spec in contract.items():
            if fn.startswith("_"):
                continue
            got = names(table.get(fn, {}))
            want = set(spec[kind])
            if got != want:
                error(
                    f"run.tf {local}[{fn}] vs environment.json {kind}: "
                    f"missing {sorted(want - got)}, unexpected {sorted(got - want)}"
                )


FUNCTIONS = {"submit", "status", "github-webhook", "worker", "cleanup"}
# Google's URL-map path rule: starts with /, and * only as the whole last segment.
URL_PATH_RE = re.compile(r"^/[^*?#]*(?<=/)\*$|^/[^*?#]*$")


def check_url_map(infra: Path) -> None:
    """url_map.json (lb.tf's URL map, the tests' stand-in's routes) names public functions only,
    with paths Google accepts, each owned by one function."""
    url_map = json.loads((infra / "url_map.json").read_text())
    public = FUNCTIONS - {"worker", "cleanup"}  # internal ingress: never behind the load balancer
    owners = [url_map["default"], *url_map["paths"]]
    for fn in owners + url_map["iap"]:
        if fn not in public:
            error(f"url_map.json: {fn!r} is not a function the load balancer may front {sorted(public)}")
    if "github-webhook" in url_map["iap"]:
        error("url_map.json: GitHub cannot sign in to IAP; github-webhook must not be in iap")
    seen: dict[str, str] = {}
    for fn, paths in url_map["paths"].items():
        for path in paths:
            if not URL_PATH_RE.match(path):
                error(f"url_map.json: {fn}: {path!r} is not a URL-map path (/a/b or /a/*)")
            if path in seen:
                error(f"url_map.json: {path!r} is routed to both {seen[path]} and {fn}")
            seen[path] = fn


def check_firestore(infra: Path, doc: dict) -> None:
    tf_indexes = None
    for l in doc.get("locals", []):
        if "firestore_indexes" in l:
            tf_indexes = l["firestore_indexes"]
    if tf_indexes is None:
        error("firestore.tf: locals.firestore_indexes not found")
        return
    from_tf = sorted(
        (unquote(ix["collection"]), tuple((unquote(f), unquote(o)) for f, o in ix["fields"]))
        for ix in tf_indexes.values()
    )
    spec = json.loads((infra / "firestore.indexes.json").read_text())
    from_json = []
    for ix in spec.get("indexes", []):
        if ix.get("queryScope", "COLLECTION") != "COLLECTION":
            error("firestore.indexes.json: only COLLECTION scope is mirrored in firestore.tf")
        from_json.append(
            (ix["collectionGroup"], tuple((f["fieldPath"], f["order"]) for f in ix["fields"]))
        )
    if from_tf != sorted(from_json):
        error(f"firestore.tf and firestore.indexes.json differ:\n  tf:   {from_tf}\n  json: {sorted(from_json)}")


# --------------------------------------------------------------------------------------------
# cloudbuild/
# --------------------------------------------------------------------------------------------

BUILTIN_SUBST = {
    "PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "COMMIT_SHA", "SHORT_SHA",
    "REVISION_ID", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME", "REF_NAME",
    "TRIGGER_NAME", "TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT",
}


def check_cloudbuild(root: Path) -> None:
    path = root / "cloudbuild" / "cloudbuild.yaml"
    if not path.exists():
        error("cloudbuild/cloudbuild.yaml is missing")
        return
    text = path.read_text()
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        error(f"cloudbuild.yaml: does not parse: {e}")
        return
    allowed_top = {
        "steps", "timeout", "queueTtl", "logsBucket", "options", "substitutions", "tags",
        "serviceAccount", "secrets", "availableSecrets", "artifacts", "images",
    }
    for k in set(cfg) - allowed_top:
        error(f"cloudbuild.yaml: unknown top-level key {k}")
    ids = set()
    step_keys = {
        "name", "args", "env", "dir", "id", "waitFor", "entrypoint", "secretEnv", "volumes",
        "timeout", "script", "automapSubstitutions", "allowFailure", "allowExitCodes",
    }
    for i, step in enumerate(cfg.get("steps", [])):
        for k in set(step) - step_keys:
            error(f"cloudbuild.yaml step {i}: unknown key {k}")
        if "name" not in step:
            error(f"cloudbuild.yaml step {i}: no name (builder image)")
        for w in step.get("waitFor", []):
            if w != "-" and w not in ids:
                error(f"cloudbuild.yaml step {step.get('id', i)}: waitFor {w!r} is not an earlier step id")
        if "id" in step:
            if step["id"] in ids:
                error(f"cloudbuild.yaml: duplicate step id {step['id']}")
            ids.add(step["id"])
    declared = set((cfg.get("substitutions") or {}).keys())
    for k in declared:
        if not k.startswith("_"):
            error(f"cloudbuild.yaml: user substitution {k} must start with _")
    # $VAR / ${VAR} not escaped as $$: Cloud Build substitutes these.
    values = "\n".join(strings(cfg))  # values only: comments may mention $NAME
    for m in re.finditer(r"(?<!\$)\$\{?([A-Z_][A-Z0-9_]*)\}?", values):
        name = m.group(1)
        if name.startswith("_") and name not in declared:
            error(f"cloudbuild.yaml: substitution ${name} is not declared in substitutions")
        elif not name.startswith("_") and name not in BUILTIN_SUBST:
            error(f"cloudbuild.yaml: ${name} is not a Cloud Build substitution; escape shell variables as $${name}")

    dockerfile = root / "cloudbuild" / "Dockerfile"
    hadolint = shutil.which("hadolint")
    if not dockerfile.exists():
        error("cloudbuild/Dockerfile is missing")
    elif hadolint:
        r = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
        if r.returncode != 0:
            error(f"hadolint cloudbuild/Dockerfile:\n{r.stdout}{r.stderr}")
    else:
        warnings.append("hadolint not found: Dockerfile not linted")


def main() -> int:
    infra, ga_lib, beta_lib = (Path(a).resolve() for a in sys.argv[1:4])
    ga, beta = Schema(ga_lib), Schema(beta_lib)
    if len(ga.resources) < 500 or len(beta.resources) < 500:
        error("provider schemas look incomplete")
    check_terraform(infra, ga, beta)
    check_cloudbuild(infra.parent)
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}")
    n_tf = len(list(infra.glob("*.tf")))
    if errors:
        print(f"infra/check: {len(errors)} problem(s) in {n_tf} .tf files + cloudbuild/")
        return 1
    print(f"infra/check: ok ({n_tf} .tf files against google/google-beta 6.50.0 schemas; cloudbuild/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
