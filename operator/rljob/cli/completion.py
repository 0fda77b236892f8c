"""`rljob completion bash|zsh`: shell completion written from the argument parser itself.

Generated rather than hand-written so that a new command or flag completes without anyone remembering to
update a script, and without a dependency: the parser already knows every subcommand, option and choice.
Job names complete from the cluster (`rljob list -o name`, with the -n/--context/--kubeconfig already typed),
as kubectl's completion does; anything else that takes a value falls back to file names.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh")
# Positionals that name a job in the current namespace: completed from the cluster.
JOB_POSITIONALS = ("name", "names")
# Commands whose `name` positional is not a job.
NOT_JOB_NAMES = {"recipes": "recipe"}
# Flags whose values select where `rljob list` looks, passed on when completing job names.
CLUSTER_FLAGS = ("-n", "--namespace", "--context", "--kubeconfig")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="bash: source <(rljob completion bash), or save it under "
                       "/etc/bash_completion.d/. zsh: source <(rljob completion zsh) in ~/.zshrc.")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=run)


@dataclass
class Command:
    """What completes after one subcommand."""

    name: str
    options: list[str] = field(default_factory=list)
    takes_value: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)  # option -> its values
    positional_choices: list[str] = field(default_factory=list)
    job_names: bool = False


def describe(parser: argparse.ArgumentParser) -> tuple[list[str], list[Command]]:
    """(the top-level options, each subcommand) as the parser defines them."""
    top = [s for a in parser._actions for s in a.option_strings]
    commands: list[Command] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            cmd = Command(name)
            for a in sub._actions:
                if a.option_strings:
                    cmd.options += a.option_strings
                    if a.nargs != 0:
                        cmd.takes_value += a.option_strings
                        if a.choices:
                            for s in a.option_strings:
                                cmd.choices[s] = [str(x) for x in a.choices]
                elif a.choices:
                    cmd.positional_choices += [str(x) for x in a.choices]
                elif a.dest in JOB_POSITIONALS and name not in NOT_JOB_NAMES:
                    cmd.job_names = True
            if name in NOT_JOB_NAMES:
                from ..api.models import RECIPES

                cmd.positional_choices += list(RECIPES)
            commands.append(cmd)
    return top, commands


def _words(items: list[str]) -> str:
    return shlex.quote(" ".join(items))


def bash_script(parser: argparse.ArgumentParser) -> str:
    top, commands = describe(parser)
    prog = parser.prog
    fn = f"_{prog.replace('-', '_')}"
    cases = []
    for cmd in commands:
        lines = [f"        {cmd.name})"]
        if cmd.choices:
            lines.append('            case "$prev" in')
            for opt, values in cmd.choices.items():
                lines.append(f'                {opt}) COMPREPLY=($(compgen -W {_words(values)} -- "$cur")); return;;')
            lines.append("            esac")
        if cmd.takes_value:
            # A value the parser has no list for (a file, a number): leave it to the default completion.
            lines.append(f'            case "$prev" in {"|".join(cmd.takes_value)}) return;; esac')
        lines.append(f'            if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W {_words(cmd.options)} -- "$cur")); return; fi')
        if cmd.positional_choices:
            lines.append(f'            COMPREPLY=($(compgen -W {_words(cmd.positional_choices)} -- "$cur"))')
        elif cmd.job_names:
            lines.append(f'            COMPREPLY=($(compgen -W "$({fn}_jobs)" -- "$cur"))')
        lines.append("            ;;")
        cases.append("\n".join(lines))
    names = [cmd.name for cmd in commands]
    flag_cases = "|".join(CLUSTER_FLAGS)
    return f"""# {prog} completion for bash, generated from its argument parser: source <({prog} completion bash)
{fn}_jobs() {{
    local i args=()
    for ((i=1; i<${{#COMP_WORDS[@]}}-1; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {flag_cases}) args+=("${{COMP_WORDS[i]}}" "${{COMP_WORDS[i+1]}}");;
        esac
    done
    "${{COMP_WORDS[0]}}" list -o name "${{args[@]}}" 2>/dev/null | sed 's|.*/||'
}}

{fn}() {{
    local cur prev cmd i
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd=""
    for ((i=1; i<COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -*) ;;
            *) cmd="${{COMP_WORDS[i]}}"; break;;
        esac
    done
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W {_words(top)} -- "$cur"))
        else
            COMPREPLY=($(compgen -W {_words(names)} -- "$cur"))
        fi
        return
    fi
    case "$cmd" in
{chr(10).join(cases)}
    esac
}}
complete -o default -F {fn} {prog}
"""


def zsh_script(parser: argparse.ArgumentParser) -> str:
    # zsh runs bash completion functions through bashcompinit: one generated script serves both shells.
    return (f"# {parser.prog} completion for zsh: source <({parser.prog} completion zsh)\n"
            "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser))


def run(args: argparse.Namespace) -> int:
    from . import build_parser

    parser = build_parser()
    sys.stdout.write(bash_script(parser) if args.shell == "bash" else zsh_script(parser))
    return 0
