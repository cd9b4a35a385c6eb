"""The ``hubexport`` command line: parses arguments and delegates to the stages.

Exit codes: 0 ok, 1 failure, 2 usage or spec error, 3 verification failed,
130 interrupted. Errors print one line, ``error: ...``, never a traceback.
TensorFlow is imported only by the commands that build or load modules.
"""

import fnmatch
import json
import logging
import sys
from pathlib import Path

import click

from hubexport import __version__
from hubexport.errors import EXIT_INTERRUPTED, EXIT_USAGE, HubexportError, UsageError

_EPILOG = """\b
Exit codes: 0 ok, 1 failure, 2 usage or spec error (also: a source without
a published checksum, refused without --allow-unpinned), 3 verification
failed, 130 interrupted.
Environment: HUBEXPORT_CACHE (download cache), HUBEXPORT_MIRROR (download
base URL or path for air-gapped machines), HUBEXPORT_ALLOW_UNPINNED=1 (as
--allow-unpinned)."""

specs_option = click.option(
    "--specs", "specs_dir", type=click.Path(file_okay=False, path_type=str), default=None,
    help="Directory of YAML model specs (default: the specs shipped with hubexport).")
mirror_option = click.option(
    "--mirror", default=None, envvar="HUBEXPORT_MIRROR", metavar="URL",
    help="Base URL (http://, https://, file://) or local directory serving the tarballs "
         "under their canonical file names. Checksums are still enforced. "
         "[env: HUBEXPORT_MIRROR]")
cache_option = click.option(
    "--cache-dir", default=None, type=click.Path(file_okay=False, path_type=str),
    help="Download cache (default: $HUBEXPORT_CACHE, else $XDG_CACHE_HOME/hubexport).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON on stdout.")
allow_unpinned_option = click.option(
    "--allow-unpinned", is_flag=True, envvar="HUBEXPORT_ALLOW_UNPINNED",
    help="Use a checkpoint whose spec says checksum: unpublished (no published checksum): "
         "download it unverified and print its sha256 and size on stderr (build records "
         "them in each module's stamp). Pinned checksums are still enforced. "
         "[env: HUBEXPORT_ALLOW_UNPINNED=1]")


def _warn_unpinned(spec, fetched):
    """Prints the one-line warning about an unpinned source on stderr."""
    from hubexport.fetch import unpinned_warning

    click.echo(unpinned_warning(spec, fetched), err=True)


def _load_specs(specs_dir, patterns=(), all_=None):
    """The specs that model names or shell-style patterns name (all with ``all_``).

    A pattern (``fnmatch``: ``*``, ``?``, ``[...]``, case-sensitive) names
    every model it matches, e.g. ``'mobilenet_v1_*_224'``; each model is
    taken once, in the order of the patterns, then of ``hubexport list``.
    A name ending in ``.yaml`` is a spec file (e.g. one ``hubexport
    new-spec`` wrote): its models. ``all_`` is the value of a command's
    ``--all`` (None: it has none).

    Raises:
      UsageError: no name or pattern (and not ``all_``), or names or
        patterns that match no model; the one-line message names them and,
        compactly, the known models.
    """
    from hubexport.specs import load_spec_file, load_specs

    files = [p for p in patterns if p.endswith(".yaml")]
    patterns = [p for p in patterns if not p.endswith(".yaml")]
    from_files = {}
    for path in files:
        from_files.update(load_spec_file(path))
    if files and not patterns and not all_:
        return list(from_files.values())
    specs = load_specs(specs_dir)
    if all_:
        return list(specs.values())
    known = "%s (see 'hubexport list')" % _describe(specs)
    if not patterns:
        raise UsageError("name a model or a pattern%s; known: %s"
                         % (" (or pass --all)" if all_ is not None else "", known))
    chosen, misses = {}, []
    for pattern in patterns:
        names = [pattern] if pattern in specs else [
            name for name in specs if fnmatch.fnmatchcase(name, pattern)]
        chosen.update((name, specs[name]) for name in names)
        if not names:
            misses.append(pattern)
    if any(set(miss) & set("*?[") for miss in misses):
        raise UsageError("no model matches %s; known: %s"
                         % (", ".join(repr(m) for m in misses), known))
    if misses:
        raise UsageError("unknown model %s; known: %s" % (", ".join(misses), known))
    return list({**from_files, **chosen}.values())


def _describe(specs):
    """The model names, compactly: ``a, b, mobilenet_v2_{035,050}_{96,128}, ...``.

    The models of one variant table (spec file F.yaml, names ``F_A_B``) are
    written as brace lists, grouped by the B's of each A.
    """
    files = {}
    for name, spec in specs.items():
        files.setdefault(spec.source if spec.variant else name, []).append(name)
    parts = []
    for source, names in files.items():
        prefix = "%s_" % Path(source).stem
        rest = [name[len(prefix):].split("_") for name in names]
        if len(names) == 1 or any(len(r) != 2 or not n.startswith(prefix)
                                  for n, r in zip(names, rest)):
            parts += names
            continue
        seconds = {}
        for first, second in rest:
            seconds[first] = seconds.get(first, ()) + (second,)
        firsts = {}
        for first, group in seconds.items():
            firsts.setdefault(group, []).append(first)
        parts += ["%s%s_%s" % (prefix, _braces(f), _braces(s)) for s, f in firsts.items()]
    return ", ".join(parts)


def _braces(values):
    return values[0] if len(values) == 1 else "{%s}" % ",".join(values)


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubexport")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def cli(verbose):
    """Turn TF-Slim's pre-trained checkpoints into TensorFlow Hub modules.

    \b
    The pipeline: specs -> fetch/verify -> checkpoint -> nets -> module
    formats (TF1 Hub format v1/v3, TF2 SavedModel v4/v5) -> cards.

    \b
    Examples:
      hubexport list
      hubexport fetch inception_v2
      hubexport build inception_v2 --version 3
      hubexport build --all --output modules
      hubexport new-spec flowers --from inception_v2 --checkpoint train_dir \\
          --num-classes 5 --handle acme/flowers/inception_v2
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="hubexport: %(message)s")


@cli.command("list", epilog=_EPILOG)
@click.argument("patterns", nargs=-1, metavar="[NAME|PATTERN]...")
@specs_option
@json_option
def list_cmd(patterns, specs_dir, as_json):
    """List the models (all, or those named), their module handles and versions.

    A PATTERN is shell-style, e.g. 'mobilenet_v1_*_224' (quote it).

    \b
    Examples:
      hubexport list --json
      hubexport list 'mobilenet_v2_*'
    """
    specs = _load_specs(specs_dir, patterns, all_=not patterns or None)
    rows = []
    for spec in specs:
        for target in spec.targets():
            rows.append({"name": spec.name, "architecture": spec.architecture,
                         "kind": target.kind, "handle": target.handle,
                         "version": target.version.version, "format": target.version.format,
                         "input_size": target.version.input_size,
                         "image_size": spec.image_size, "num_classes": spec.num_classes,
                         "feature_size": spec.feature_size,
                         "module_handle": target.module_handle,
                         "signatures": list(target.version.signatures)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for spec in specs:
        click.echo("%s (%s, %dx%d pixels, %d classes, %d features)"
                   % (spec.name, spec.architecture, spec.image_size, spec.image_size,
                      spec.num_classes, spec.feature_size))
        for kind, family in spec.modules.items():
            versions = ", ".join("%d (%s, %s)" % (v.version, v.format, v.input_size)
                                 for v in family.versions.values())
            click.echo("  %s  versions %s" % (family.handle, versions))


@cli.command(epilog=_EPILOG)
@click.argument("names", nargs=-1, metavar="NAME|PATTERN...")
@specs_option
@mirror_option
@cache_option
@allow_unpinned_option
@json_option
def fetch(names, specs_dir, mirror, cache_dir, allow_unpinned, as_json):
    """Download, verify and unpack the checkpoint tarballs of the models named.

    For a spec with a local checkpoint (checkpoint.path), nothing is
    downloaded: it prints the checkpoint used and its files' sha256 digest
    (checked against checkpoint.checksum if the spec pins one).

    NAME is a model (see 'hubexport list') or a shell-style pattern such as
    'mobilenet_v1_*_224' (quote it). A verified tarball in the cache is not
    downloaded again; a partial one is resumed. Size and checksum are
    checked before the file is used. A spec with checksum: unpublished is
    refused (exit 2) unless --allow-unpinned; then the sha256 and size of
    what was fetched are printed on stderr, to pin in the spec once checked.
    With --json, one JSON object per model and line.

    \b
    Examples:
      hubexport fetch inception_v2 --mirror http://127.0.0.1:8000/models
      hubexport fetch 'mobilenet_v1_*_224' --allow-unpinned
    """
    from hubexport import fetch as fetch_stage

    specs = _load_specs(specs_dir, names)
    for spec in specs:
        got = fetch_stage.fetch_source(spec, cache_dir=cache_dir, mirror=mirror,
                                       allow_unpinned=allow_unpinned)
        if not got.pinned:
            _warn_unpinned(spec, got)
        if as_json:
            click.echo(json.dumps({"name": spec.name,
                                   "tarball": got.tarball and str(got.tarball),
                                   "checkpoint": str(got.checkpoint), "checksum": got.checksum,
                                   "size": got.size, "pinned": got.pinned,
                                   "files": got.files}))
        else:
            if len(specs) > 1:
                click.echo("model:      %s" % spec.name)
            if got.tarball is not None:
                click.echo("tarball:    %s" % got.tarball)
            click.echo("checkpoint: %s" % got.checkpoint)
            if got.files is not None:  # a local checkpoint: its digest, to pin in the spec
                click.echo("checksum:   %s (%d bytes in %d files%s)"
                           % (got.checksum, got.size, len(got.files),
                              "" if got.pinned else "; not pinned in the spec"))


@cli.command(epilog=_EPILOG)
@click.argument("names", nargs=-1, metavar="[NAME|PATTERN]...")
@click.option("--all", "all_", is_flag=True, help="Build every model the specs define.")
@click.option("--version", type=int, default=None,
              help="Only this module version (one the spec defines, e.g. 1, 2, 3, 4, 5).")
@click.option("--kind", type=click.Choice(["classification", "feature_vector"]), default=None,
              help="Only this module kind.")
@click.option("--output", "-o", default="modules", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Output directory.")
@click.option("--force", is_flag=True, help="Rebuild modules that are up to date.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes writing modules (each module's bytes do not depend on it).")
@click.option("--deploy", multiple=True, type=click.Choice(["tflite", "tfjs"]),
              help="Also write deployment variants of the modules whose spec lists the format "
                   "(repeatable), with cards: 'tflite' converts version 5 to a float32 and a "
                   "dynamic-range .tflite at OUTPUT/<publisher>/lite-model/<rest of handle>/5/"
                   "<variant>/1.tflite; 'tfjs' writes TF.js graph models (float32, float16, "
                   "uint8 weights) of versions 1 and 3 at OUTPUT/<publisher>/tfjs-model/<rest "
                   "of handle>/<version>/<variant>/1/.")
@specs_option
@mirror_option
@cache_option
@allow_unpinned_option
@json_option
def build(names, all_, version, kind, output, force, jobs, deploy, specs_dir, mirror, cache_dir,
          allow_unpinned, as_json):
    """Build TF Hub modules and their cards from TF-Slim checkpoints.

    NAME is a model (see 'hubexport list'), a shell-style pattern such as
    'mobilenet_v1_*_224' (quote it), which builds every model it matches,
    or a spec file (NAME.yaml, e.g. from 'hubexport new-spec').
    Without --version or --kind, builds every version and kind the spec
    defines. Each module lands in OUTPUT/<handle>/<version>/ with its card at
    OUTPUT/<handle>/<version>.md; a module directory appears only complete.
    Modules already built from the same inputs are skipped. A spec with
    checksum: unpublished is refused (exit 2) unless --allow-unpinned; the
    stamp then records the sha256 and size of the tarball used, "pinned":
    false.

    \b
    Examples:
      hubexport build inception_v2 --version 3
      hubexport build inception_resnet_v2 --version 1 --kind feature_vector
      hubexport build mobilenet_v2_100_224 --version 5
      hubexport build 'mobilenet_v1_*_224' --jobs 2
      hubexport build --all --output modules --jobs 2
      hubexport build specs/flowers_inception_v2.yaml --version 5
      hubexport build mobilenet_v2_100_224 --version 5 --deploy tflite
      hubexport build inception_v2 --version 3 --deploy tfjs
    """
    from hubexport.build import build as build_stage

    specs = _load_specs(specs_dir, names, all_)
    results = build_stage(specs, output=output, version=version, kind=kind,
                          cache_dir=cache_dir, mirror=mirror, force=force, jobs=jobs,
                          allow_unpinned=allow_unpinned, on_unpinned=_warn_unpinned,
                          deploy=deploy)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
        return
    for r in results:
        click.echo("%-10s %s\n           %-7s %s\n           card:   %s"
                   % (r.status, r.module_handle, "module:" if r.deploy is None else "file:",
                      r.module_dir, r.card))


@cli.command(epilog=_EPILOG)
@click.argument("output", type=click.Path(file_okay=False, path_type=str))
@click.option("--registry", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Registry directory (created if missing).")
@click.option("--force", is_flag=True,
              help="Replace published versions whose content differs (they are immutable "
                   "otherwise).")
@json_option
def publish(output, registry, force, as_json):
    """Publish the modules and variants built under OUTPUT into the registry --registry.

    Lays out REGISTRY/<handle>/<version>/ (the module),
    REGISTRY/<handle>/<version>.tar.gz (its reproducible archive),
    REGISTRY/assets/docs/<publisher>/models/<model>/<version>.md (its card)
    and REGISTRY/index.json. Deployment variants ('build --deploy') go in
    under their own handles: a TF.js directory and its .tar.gz, or a
    .tflite file; their index entries name the parent module. Publishing
    the same content again changes nothing; a damaged registry is refused.

    \b
    Example:
      hubexport publish modules --registry registry --json
    """
    from hubexport.publish import publish as publish_stage

    result = publish_stage(output, registry, force=force)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    for m in result.modules:
        click.echo("%-10s %s  (%s, %d bytes, sha256 %s)"
                   % (m.status, m.module_handle, m.entry["archive"], m.entry["size"],
                      m.entry["sha256"][:16]))
    click.echo("index:     %s" % result.index)


@cli.command(epilog=_EPILOG)
@click.argument("registry", type=click.Path(file_okay=False, path_type=str))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: any free port; the URL is printed).")
@json_option
def serve(registry, host, port, as_json):
    """Serve a registry over HTTP for hub.load and hub.KerasLayer.

    tensorflow_hub resolves http://HOST:PORT/<handle>/<version> by asking
    for ?tf-hub-format=compressed; the server answers with the module's
    archive. Deployment variants are served as tfhub.dev served them:
    tf.loadGraphModel(URL, {fromTFHub: true}) gets URL/model.json and the
    shards with ?tfjs-format=file, and URL?lite-format=tflite is a .tflite
    file. Prints the base URL (with --json: one JSON line), then serves
    until interrupted.

    \b
    Example:
      hubexport serve registry --port 8000
      python -c "import tensorflow_hub as hub; hub.load('http://127.0.0.1:8000/google/imagenet/inception_v2/classification/3')"
    """
    from hubexport.serve import make_server, run

    server = make_server(registry, host=host, port=port)
    info = server.describe()
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo("serving %d modules of %s at %s (Ctrl-C to stop)"
                   % (info["modules"], info["registry"], info["url"]))
    sys.stdout.flush()
    run(server)


@cli.command(epilog=_EPILOG)
@click.argument("path_or_url")
@specs_option
@click.option("--handle", default=None, metavar="HANDLE/VERSION",
              help="The module handle, when a module directory or archive does not lie at "
                   ".../<handle>/<version>[.tar.gz].")
@click.option("--no-inference", "no_inference", is_flag=True,
              help="Leave out the smoke inference: no module is loaded into TensorFlow (much "
                   "faster on a large output); files, protos, variables and cards are still "
                   "checked.")
@json_option
def verify(path_or_url, specs_dir, handle, no_inference, as_json):
    """Check modules against their specs; exit code 3 if anything disagrees.

    PATH_OR_URL is a module directory (.../<handle>/<version>), an archive
    (.../<handle>/<version>.tar.gz), a deployment variant from 'build
    --deploy' (a .tflite file or a TF.js directory with model.json), a build
    output directory (its modules and variants), a registry directory (with
    index.json), or a URL served by 'hubexport serve' (a module or variant,
    http://HOST:PORT/<handle>/<version>, or the whole registry,
    http://HOST:PORT/). Checks the format, tag sets, signatures and their
    shapes, variables, image_module_info, a smoke inference at the default
    image size (not with --no-inference), and the card's handle line and
    metadata; for archives and registries also the members and checksums;
    for variants their files against the stamp (or index entry), their
    runtime view and the accuracy their card states.

    \b
    Examples:
      hubexport verify modules/google/imagenet/inception_v2/classification/3
      hubexport verify registry --json
      hubexport verify modules --no-inference
      hubexport verify modules/google/lite-model/imagenet/mobilenet_v1_025_128/classification/5/default/1.tflite
      hubexport verify http://127.0.0.1:8000/google/imagenet/inception_v2/classification/3
    """
    from hubexport.verify import verify as verify_stage

    report = verify_stage(path_or_url, specs_dir=specs_dir, handle=handle,
                          inference=not no_inference)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    report.raise_if_failed()


@cli.command("new-spec", epilog=_EPILOG)
@click.argument("name")
@click.option("--from", "base", required=True, metavar="MODEL|ARCHITECTURE",
              help="The shipped model (see 'hubexport list') or architecture the checkpoint "
                   "was trained with; the spec starts from its net, sizes, card text and "
                   "versions.")
@click.option("--checkpoint", required=True, metavar="PATH",
              help="Your checkpoint: a TF V1 file, a V2 prefix (model.ckpt-N) or a training "
                   "directory whose 'checkpoint' file names the latest one.")
@click.option("--num-classes", type=click.IntRange(min=1), required=True,
              help="Classes of the checkpoint's logits layer.")
@click.option("--handle", required=True, metavar="PUBLISHER/NAME[/...]",
              help="Handle prefix: modules land at HANDLE/classification/VERSION and "
                   "HANDLE/feature_vector/VERSION.")
@click.option("--labels", default=None, metavar="FILE",
              help="Class labels, one per line (num-classes lines); the modules carry them "
                   "as assets/labels.txt.")
@click.option("--output", "-o", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=str),
              help="Directory to write NAME.yaml to.")
@click.option("--force", is_flag=True, help="Replace an existing NAME.yaml.")
@specs_option
def new_spec(name, base, checkpoint, num_classes, handle, labels, output, force, specs_dir):
    """Write a spec for your own TF-Slim checkpoint, to publish under your handle.

    The spec (OUTPUT/NAME.yaml, commented) reads the local checkpoint, starts
    from the shipped spec of --from, and is valid as written; its card
    fields for the dataset and the training say TODO until you fill them
    in. Paths in it are relative to the spec file. Then build it by passing
    the file (or --specs OUTPUT).

    \b
    Example:
      hubexport new-spec flowers_inception_v2 --from inception_v2 \\
          --checkpoint train_dir --num-classes 5 --labels labels.txt \\
          --handle acme/flowers/inception_v2 --output specs
      hubexport build specs/flowers_inception_v2.yaml --version 5
    """
    from hubexport.new_spec import new_spec as new_spec_stage

    path = new_spec_stage(name, base, checkpoint, num_classes, handle, labels=labels,
                          output=output, specs_dir=specs_dir, force=force)
    click.echo("wrote %s; fill in its TODOs, then: hubexport build %s --version 3" % (path, path))


@cli.command("make-standin", hidden=True)
@click.argument("architecture")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--seed", type=int, default=0, show_default=True)
def make_standin(architecture, out_dir, seed):
    """Write a stand-in checkpoint tarball and a matching spec directory (tests, demo)."""
    from hubexport.standin import make_standin as make
    from hubexport.tfimport import import_tensorflow

    import_tensorflow()

    result = make(architecture, out_dir, seed=seed)
    click.echo("tarball:  %s\nsize:     %d\nchecksum: %s\nspecs:    %s"
               % (result.tarball, result.size, result.checksum, result.spec_dir))


def main(argv=None):
    """Console entry point: runs the CLI and maps errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="hubexport", standalone_mode=False)
    except HubexportError as e:
        click.echo("error: %s" % e, err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code if e.exit_code else EXIT_USAGE)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0)


if __name__ == "__main__":
    main()
