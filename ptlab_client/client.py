"""The HTTP side: a tiny JSON client of the ptlab API over urllib."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request


class ApiError(Exception):
    """An error answer of the API: `{"error": {"code", "message", "fields"}}`, or a transport failure."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.fields = status, code, message, fields or {}

    def describe(self) -> str:
        lines = [f"error {self.status} ({self.code}): {self.message}"]
        lines += [f"  {name}: {' '.join(msgs)}" for name, msgs in sorted(self.fields.items())]
        return "\n".join(lines)


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict | None = None, params: dict | None = None,
                raw: bool = False):
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                err = json.loads(payload)["error"]
                raise ApiError(e.code, err.get("code", "error"), err.get("message", ""), err.get("fields")) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(e.code, "http_error", payload[:200].decode("utf-8", "replace")) from None
        except urllib.error.URLError as e:
            raise ApiError(0, "unreachable", str(e.reason)) from None
        except (http.client.HTTPException, OSError) as e:  # a server going away mid-answer (a restart)
            raise ApiError(0, "unreachable", f"{type(e).__name__}: {e}") from None
        try:
            return payload if raw else json.loads(payload)
        except ValueError:
            raise ApiError(0, "unreachable", "the server's answer was cut short") from None

    def get(self, path: str, **params):
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict | None = None):
        return self.request("POST", path, body=body or {})

    # --- endpoints ---------------------------------------------------------------------------------------
    def create_experiment(self, spec: dict) -> dict:
        return self.post("/api/experiments", spec)

    def experiment(self, pk: int) -> dict:
        return self.get(f"/api/experiments/{pk}")

    def sweep(self, pk: int) -> dict:
        """The experiment's sweep: per method its trials (run, params, state, validation reward), its best
        trial and compute; the winners' verdicts on the test half. ApiError 404 without a sweep."""
        return self.get(f"/api/experiments/{pk}/sweep")

    def cancel_experiment(self, pk: int) -> dict:
        return self.post(f"/api/experiments/{pk}/cancel")

    def resume_run(self, run_id: int) -> dict:
        return self.post(f"/api/runs/{run_id}/resume")

    def metrics(self, run_id: int, names: list[str] | None = None, step_min: int | None = None,
                step_max: int | None = None, page_size: int = 5000):
        """Every matching point, following the pages."""
        params = {"names": ",".join(names) if names else None, "step_min": step_min, "step_max": step_max,
                  "limit": page_size, "offset": 0}
        while True:
            page = self.get(f"/api/runs/{run_id}/metrics", **params)
            yield from page["results"]
            if not page["next"]:
                return
            params["offset"] = page["offset"] + page["limit"]

    def build_vote_dataset(self, pk: int, **policy) -> dict:
        """A new version of the experiment's vote dataset: ties, both_bad, disagree, also, name."""
        return self.post(f"/api/experiments/{pk}/vote-datasets", policy)

    def vote_datasets(self, pk: int) -> list[dict]:
        return self.get(f"/api/experiments/{pk}/vote-datasets")["results"]

    def start_round(self, pk: int, picks: list[str] | None = None, methods: list[str] | None = None,
                    vote_dataset: int | None = None) -> dict:
        body = {k: v for k, v in {"picks": picks, "methods": methods, "vote_dataset": vote_dataset}.items()
                if v is not None}
        return self.post(f"/api/experiments/{pk}/rounds", body)

    def rounds(self, pk: int) -> list[dict]:
        return self.get(f"/api/experiments/{pk}/rounds")["rounds"]

    def start_judge(self, pk: int, model: str = "tiny", mode: str = "calibrate", limit: int | None = None) -> dict:
        """A local judge votes on the experiment (a job): `calibrate` on the items people voted on, or `more`
        (`limit` unrated pairs, only once calibrated)."""
        body = {"model": model, "mode": mode, **({"limit": limit} if limit is not None else {})}
        return self.post(f"/api/experiments/{pk}/judge", body)

    def judge_job(self, job_id: int) -> dict:
        """The job's state, progress, votes, error, and the judges' calibration against people."""
        return self.get(f"/api/judge-jobs/{job_id}")

    def report(self, pk: int) -> bytes:
        return self.request("GET", f"/api/experiments/{pk}/report.json", raw=True)
