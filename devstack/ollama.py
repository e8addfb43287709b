"""The real Ollama (0.12.6, built from its Go module by ``hack/build-ollama.sh``) serving
the packaged SmolLM2 on CPU, for the tests of LLMLoom's Ollama wire.

Two models are created from the same GGUF, with no download: ``smollm2`` with the
template Ollama picks for it (plain chat: Ollama refuses tools for it), and
``smollm2-tools`` with a template that shows the model its tools and reads a
JSON object naming one as a call, so that Ollama accepts ``tools`` and parses
tool calls (a 135M model writes the call reliably when a ``format`` schema holds
it to one). ``OLLAMA_MODELS`` and ``HOME`` (its key) are the server's own
folders.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from devstack.cluster import REPO
from devstack.modelserver import model_path
from devstack.procs import Proc, free_port, wait_for

CHAT_MODEL = "smollm2"
TOOLS_MODEL = "smollm2-tools"
TOOLS_TEMPLATE = """{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}{{ end }}
{{- if .Tools }}
You may call functions. Function signatures:
{{- range .Tools }}
{{ . }}
{{- end }}
To call a function, reply with only
{"name": <function-name>, "arguments": <args-json-object>}
{{ end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}{{ else if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}{{ end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""


def ollama_binary() -> Path:
    """The Ollama binary, built first when missing (``$LLMLOOM_OLLAMA`` names another)."""
    named = os.environ.get("LLMLOOM_OLLAMA")
    if named:
        return Path(named)
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-ollama.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


class RealOllama:
    """``ollama serve`` on a free loopback port, with the two models created."""

    def __init__(self, workdir: Path, timeout: float = 120) -> None:
        self.binary = ollama_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "home").mkdir(exist_ok=True)
        self.env = {
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": str(workdir / "models"),
            "HOME": str(workdir / "home"),
            "OLLAMA_KEEP_ALIVE": "-1",
            "OLLAMA_NUM_PARALLEL": "2",
        }
        self.proc = Proc("ollama", [str(self.binary), "serve"], workdir, self.env)

        def up() -> bool:
            self.proc.check_alive()
            return httpx.get(self.url, timeout=2).text.startswith("Ollama is running")

        wait_for(up, timeout, "ollama serve")
        gguf = model_path()
        self._create(workdir, CHAT_MODEL, f"FROM {gguf}\nPARAMETER temperature 0\n")
        self._create(
            workdir,
            TOOLS_MODEL,
            f'FROM {gguf}\nTEMPLATE """{TOOLS_TEMPLATE}"""\n'
            "PARAMETER stop <|im_end|>\nPARAMETER temperature 0\n",
        )

    def _create(self, workdir: Path, name: str, modelfile: str) -> None:
        path = workdir / f"{name}.Modelfile"
        path.write_text(modelfile)
        # `ollama create` writes progress as terminal codes: its exit status is the answer.
        subprocess.run(
            [str(self.binary), "create", name, "-f", str(path)],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            timeout=300,
        )

    def stop(self) -> None:
        self.proc.stop()
