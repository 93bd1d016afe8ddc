"""Chat prompts on the host: the program's own chat template (from its manifest, as the model
ships it) rendered with jinja2 the way transformers renders it; raw text when there is none."""
from __future__ import annotations

from typing import Dict, List, Optional


def render_chat(manifest: dict, messages: List[Dict[str, str]], add_generation_prompt: bool = True) -> Optional[str]:
    """The prompt text for `messages`, or None when the program carries no chat template."""
    template = manifest.get("chat_template")
    if not template:
        return None
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token="", eos_token="")


def chat_messages(prompt: str, system: Optional[str] = None) -> List[Dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
