"""`hf-smallllm publish`: a training run's snapshots as branches and its final model on main."""

COMMAND = "publish"
HELP = "publish a run's checkpoints to the Hub: snapshots as branches, the final model + model card on main"
DESCRIPTION = (
    "Publish a training run (a folder of checkpoint-<step>/ folders) to a Hub repo. Each chosen checkpoint becomes "
    "its own branch (one commit; OLMo-style names by default), the final model goes to main with a model card, the "
    "remote-code files and revisions.txt. Re-running is a no-op for what is already there and completes an "
    "interrupted publish. The token comes from --token, HF_TOKEN or `hf auth login`; the Hub from --endpoint or "
    "HF_ENDPOINT."
)


def _tag(value: str):
    step, sep, tag = value.partition("=")
    if not sep or not step.isdigit() or not tag:
        raise ValueError(f"--tag expects STEP=NAME, got {value!r}")
    return int(step), tag


def register(parser):
    parser.add_argument("run_dir", help="the run's output folder (holding checkpoint-<step>/ folders)")
    parser.add_argument("repo_id", help="the Hub repo, owner/name")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="publish only these checkpoint steps")
    parser.add_argument("--every", type=int, default=None, help="publish every checkpoint whose step is a multiple")
    parser.add_argument("--no-snapshots", action="store_true", help="publish only the final model to main")
    parser.add_argument("--final", default=None, help="folder of the final model (default: the newest checkpoint)")
    parser.add_argument("--no-final", action="store_true", help="publish snapshots only, leave main alone")
    parser.add_argument("--branch-template", default="olmo",
                        help="olmo (step{step}-tokens{tokens}B), tinyllama (step-{step_k}k-token-{tokens}B) or a "
                             "template with {step} or {step_k} and optionally {tokens} (B), {tokens_m}, {tokens_raw}")
    parser.add_argument("--tag", action="append", type=_tag, default=[], metavar="STEP=NAME",
                        help="tag the snapshot of STEP as a milestone (repeatable)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--no-create", action="store_true",
                        help="fail if the repo does not exist instead of creating it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a snapshot branch that exists with different content instead of failing")
    parser.add_argument("--no-remote-code", action="store_true",
                        help="do not ship the modeling files and auto_map (users then need hf_smallllm installed)")
    parser.add_argument("--license", default=None, help="card license (default: the family template's, apache-2.0)")
    parser.add_argument("--language", nargs="+", default=None, help="card languages (default: the family's)")
    parser.add_argument("--dataset", nargs="+", default=None, help="card datasets (Hub ids)")
    parser.add_argument("--card-tag", nargs="+", default=None, help="extra card tags")
    parser.add_argument("--base-model", default=None, help="the Hub id this model was fine-tuned from")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from huggingface_hub.errors import HfHubHTTPError

    from hf_smallllm.errors import UsageError, UsageFileNotFoundError
    from hf_smallllm.hub.publish import HubPublisher, PublishError, publish_run
    from hf_smallllm.hub.revisions import run_snapshots

    card = {k: v for k, v in (("license", args.license), ("language", args.language), ("datasets", args.dataset),
                              ("tags", args.card_tag), ("base_model", args.base_model)) if v is not None}
    options = dict(token=args.token, endpoint=args.endpoint, branch_template=args.branch_template,
                   private=args.private, create=not args.no_create, overwrite=args.overwrite,
                   remote_code=not args.no_remote_code)
    if args.no_snapshots and args.no_final:
        raise UsageError("--no-snapshots with --no-final leaves nothing to publish")
    try:
        if args.no_snapshots or args.no_final:
            publisher = HubPublisher(args.repo_id, **options)
            results = []
            if not args.no_final and args.final is None and not run_snapshots(args.run_dir):
                raise UsageFileNotFoundError(f"{args.run_dir} has no checkpoints; pass --final FOLDER")
            if args.no_final:
                from hf_smallllm.hub.revisions import select_snapshots

                tags = dict(args.tag)
                for snapshot in select_snapshots(run_snapshots(args.run_dir), args.steps, args.every):
                    results.append(publisher.publish_snapshot(snapshot.path, tag=tags.get(snapshot.step)))
                publisher.update_revisions_file()
            else:
                final = Path(args.final) if args.final else run_snapshots(args.run_dir)[-1].path
                results.append(publisher.publish_final(final, card_options=card))
        else:
            results = publish_run(args.run_dir, args.repo_id, steps=args.steps, every=args.every, final=args.final,
                                  tags=dict(args.tag), card_options=card, **options)
    except PublishError as err:
        raise UsageError(str(err)) from None
    except HfHubHTTPError as err:
        raise UsageError(f"the Hub refused a request: {str(err).splitlines()[0]}") from None
    for result in results:
        print(f"{args.repo_id}@{result.describe()}")
    return 0
