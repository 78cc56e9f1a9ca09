"""`hf-smallllm snapshots`: the snapshot revisions of a Hub repo with their step and tokens."""

COMMAND = "snapshots"
HELP = "list a Hub repo's snapshot branches with their training step and tokens"
DESCRIPTION = (
    "List the snapshot branches of a Hub repo (OLMo-style step{N}-tokens{T}B and TinyLlama-style "
    "step-{N}k-token-{T}B names are recognised, or pass --branch-template), with step, training tokens and commit, "
    "and the snapshots published as sub-folders of main (Skywork's model_hubs/Skywork-13B-Base-{T}T/). "
    "Load one with `from_pretrained(repo, revision=BRANCH)` (or `subfolder=FOLDER`) or "
    "`hf_smallllm.hub.load_snapshot(repo, step=N)`."
)


def register(parser):
    from ._options import FAMILY_NAMES

    parser.add_argument("repo_id", nargs="?", help="the Hub repo, owner/name")
    parser.add_argument("--family", choices=FAMILY_NAMES, default=None,
                        help="instead of a repo: the checkpoints the family published as repositories of their own "
                             "(TinyLlama's milestones; no network)")
    parser.add_argument("--branch-template", default=None, help="only branches of this template (default: any known)")
    parser.add_argument("--exact-tokens", action="store_true",
                        help="read each branch's trainer_state.json for the exact token count (one download each)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from hf_smallllm.errors import UsageError
    from hf_smallllm.hub.snapshots import list_snapshots, milestone_snapshots

    if (args.repo_id is None) == (args.family is None):
        raise UsageError("give a Hub repo (owner/name) or --family, not both")
    if args.family is not None:
        milestones = milestone_snapshots(args.family)
        if not milestones:
            print(f"{args.family} published no checkpoints as repositories of their own; list a repo's branches "
                  "with `hf-smallllm snapshots OWNER/NAME`")
            return 0
        width = max(len(s.repo_id) for s in milestones)
        print(f"{'repository':{width}s}  {'step':>10s}  {'tokens':>20s}")
        for s in milestones:
            print(f"{s.repo_id:{width}s}  {s.step:>10,d}  {'~' + format(s.tokens, ','):>20s}")
        return 0
    try:
        snapshots = list_snapshots(args.repo_id, branch_template=args.branch_template, endpoint=args.endpoint,
                                   token=args.token, exact_tokens=args.exact_tokens)
    except RepositoryNotFoundError:
        raise UsageError(f"repository {args.repo_id} not found (or not visible with this token)") from None
    except HfHubHTTPError as err:
        raise UsageError(f"the Hub refused to list {args.repo_id}: {str(err).splitlines()[0]}") from None
    except Exception as err:
        from huggingface_hub.errors import OfflineModeIsEnabled

        from hf_smallllm.hub.publish import _is_interruption

        if isinstance(err, OfflineModeIsEnabled) or _is_interruption(err):
            endpoint = args.endpoint or "the Hub (HF_ENDPOINT)"
            raise UsageError(f"cannot reach {endpoint} to list {args.repo_id}: {type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}") from None
        raise
    if args.json:
        for s in snapshots:
            row = {"branch": s.branch, "step": s.step, "tokens": s.tokens, "commit": s.commit}
            print(json.dumps({**row, "subfolder": s.subfolder} if s.subfolder else row))
        return 0
    if not snapshots:
        print(f"{args.repo_id} has no snapshot branches")
        return 0
    names = [s.branch + (f" {s.subfolder}/" if s.subfolder else "") for s in snapshots]
    width = max(len(name) for name in names)
    print(f"{'branch [subfolder]':{width}s}  {'step':>10s}  {'tokens':>20s}  commit")
    for name, s in zip(names, snapshots, strict=True):
        approx = "" if args.exact_tokens and s.step is not None else "~"
        step = "-" if s.step is None else format(s.step, ",d")
        print(f"{name:{width}s}  {step:>10s}  {approx + format(s.tokens, ','):>20s}  {s.commit[:10]}")
    return 0
