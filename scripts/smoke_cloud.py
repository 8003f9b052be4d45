"""The work of scripts/smoke-cloud (stdlib only): deploy an example app through Runway's API on a
real installation, open it as a viewer, delete it, and time each step."""

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request


class Failed(Exception):
    pass


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(method, url, token=None, body=None, timeout=30):
    """(status, parsed JSON or text) of one request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except urllib.error.URLError as error:
        raise Failed(f"{method} {url}: {error.reason}") from None
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def refusal(status, answer):
    message = answer.get("error") if isinstance(answer, dict) else str(answer)[:300]
    hint = {
        401: " (the identity token was refused: check its audience, the IAP client id)",
        403: " (signed in, but not allowed: is the account in iap_members?)",
    }.get(status, "")
    return f"{status}: {message}{hint}"


def identity_token(args):
    """An OIDC identity token IAP accepts from a script: RUNWAY_ID_TOKEN, or gcloud's."""
    token = os.environ.get("RUNWAY_ID_TOKEN", "").strip()
    if token:
        return token
    command = ["gcloud", "auth", "print-identity-token"]
    if args.audience:
        command.append(f"--audiences={args.audience}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise Failed("no RUNWAY_ID_TOKEN and no gcloud to get an identity token") from None
    if done.returncode != 0:
        raise Failed(f"gcloud could not print an identity token: {done.stderr.strip()}")
    return done.stdout.strip()


def main():
    parser = argparse.ArgumentParser(
        prog="scripts/smoke-cloud",
        description="Deploy an example app through Runway on Google Cloud, open it, delete it.",
    )
    parser.add_argument("console", help="the console's URL (terraform output console_url)")
    parser.add_argument("--repo", required=True, help="a GitHub repository with a Streamlit app, e.g. one holding examples/hello")
    parser.add_argument("--main-file", default="streamlit_app.py")
    parser.add_argument("--app", default=f"smoke-{secrets.token_hex(3)}", help="app name (default: smoke-RANDOM)")
    parser.add_argument("--audience", help="IAP's OAuth client id, the token's audience (for gcloud)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for live")
    parser.add_argument("--poll", type=float, default=3, help="seconds between status polls")
    args = parser.parse_args()
    console = args.console.rstrip("/")
    status_url = f"{console}/api/apps/{args.app}"
    started = time.monotonic()
    created = False

    def step(name, work):
        begun = time.monotonic()
        detail = work()
        print(f"ok   {name:<18} {time.monotonic() - begun:7.2f} s  {detail}", flush=True)
        return detail

    try:
        token = None

        def sign_in():
            nonlocal token
            token = identity_token(args)
            return "from RUNWAY_ID_TOKEN" if os.environ.get("RUNWAY_ID_TOKEN") else "from gcloud"

        step("identity token", sign_in)

        def submit():
            nonlocal created
            status, answer = call("POST", f"{console}/api/deployments", token, {
                "repo_url": args.repo, "main_file": args.main_file, "app_name": args.app,
            })
            if status != 202:
                raise Failed(f"submit answered {refusal(status, answer)}")
            created = True
            return f"release {answer['release_id']}"

        release = step("submit", submit).removeprefix("release ")

        def live():
            deadline = time.monotonic() + args.timeout
            last = None
            while time.monotonic() < deadline:
                status, answer = call("GET", status_url, token)
                if status != 200:
                    raise Failed(f"status answered {refusal(status, answer)}")
                found = next((r for r in answer.get("releases", []) if r.get("id") == release), None)
                state = found and found.get("state")
                if state != last and state:
                    print(f"     {'':<18} {'':>9}  {state}", flush=True)
                    last = state
                if state == "live":
                    return found["url"]
                if state in ("failed", "superseded"):
                    raise Failed(f"the release is {state}: {found.get('message')}")
                time.sleep(args.poll)
            raise Failed(f"not live after {args.timeout:.0f} s")

        url = step("live", live)

        def open_app():
            status, _ = call("GET", url)
            if status == 200:
                return f"{url} answers 200 to an anonymous viewer"
            # A private app: a signed-in viewer gets through IAP.
            status, answer = call("GET", url, token)
            if status == 200:
                return f"{url} answers 200 to a signed-in viewer"
            raise Failed(f"{url} answered {refusal(status, answer)}")

        step("open as viewer", open_app)

        def delete():
            nonlocal created
            status, answer = call("DELETE", f"{console}/api/deployments/{args.app}", token)
            if status != 200:
                raise Failed(f"delete answered {refusal(status, answer)}")
            created = False
            status, answer = call("GET", status_url, token)
            if status != 404:
                raise Failed(f"after the delete, status still answers {status}")
            return f"{args.app} is gone"

        step("delete", delete)
    except Failed as error:
        print(f"FAIL {error}", file=sys.stderr, flush=True)
        if created:
            print(f"     the app {args.app} may be left behind: DELETE {console}/api/deployments/{args.app}", file=sys.stderr)
        return 1
    print(f"ok   {'all':<18} {time.monotonic() - started:7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
