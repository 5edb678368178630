"""The ``oddwatch`` command line."""

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from streams.errors import ConfigError, OddwatchError
from streams.settings import Settings

__all__ = ["app", "main"]

log = logging.getLogger("oddwatch")

app = typer.Typer(
    name="oddwatch",
    help="Watch prediction events on Kafka for requests unlike the training data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

KafkaOption = Annotated[
    str | None,
    typer.Option(
        help="Kafka bootstrap servers, host:port[,host:port]. [env: ODDWATCH_KAFKA]"
    ),
]
ClickHouseOption = Annotated[
    str | None,
    typer.Option(
        help="chdb://DIR (embedded engine) or http(s)://host:port/database. "
        "[env: ODDWATCH_CLICKHOUSE]"
    ),
]
StoreOption = Annotated[
    Path | None,
    typer.Option(help="Directory of model artifacts. [env: ODDWATCH_STORE]"),
]
TopicPrefixOption = Annotated[
    str | None,
    typer.Option(help="Prefix of oddwatch's topic names. [env: ODDWATCH_TOPIC_PREFIX]"),
]
ModelOption = Annotated[str, typer.Option(help="Model name.")]
VersionOption = Annotated[int, typer.Option(min=1, help="Model version, 1 or more.")]
DataOption = Annotated[
    Path,
    typer.Option(
        exists=True, dir_okay=False, readable=True, help="CSV or Parquet file."
    ),
]


@app.command()
def train(
    model: ModelOption,
    version: VersionOption,
    data: DataOption,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Column that is the model's label, not a feature. Repeatable."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Column to leave out of the profile. Repeatable."),
    ] = None,
    alert_rate: Annotated[
        float,
        typer.Option(min=0.0001, max=0.5, help="Share of normal events to alert on."),
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Random seed of the detector.")] = 0,
    metrics: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSON list of custom metrics: name, feature or scorer, operator, "
            "threshold.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the artifact if this version exists.")
    ] = False,
    register: Annotated[
        bool,
        typer.Option(help="Publish the version on the models topic for the workers."),
    ] = True,
    store: StoreOption = None,
    kafka: KafkaOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Profile training data, fit the outlier detector, save and register it."""
    from detectors import read_table, train_model
    from detectors.metrics import load_metric_configs

    settings = Settings.from_env(store=store, kafka=kafka, topic_prefix=topic_prefix)
    path = settings.store / model / str(version)
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} already contains {model} version {version}; choose a new "
            "--version, or pass --overwrite to replace it"
        )
    configs = load_metric_configs(metrics) if metrics is not None else []
    frame = read_table(data)
    model_version = train_model(
        frame,
        model=model,
        version=version,
        target=target or [],
        exclude=exclude or [],
        target_alert_rate=alert_rate,
        seed=seed,
        metrics=configs,
    )
    model_version.save(settings.store, overwrite=overwrite)
    typer.echo(
        f"trained {model} version {version} on {len(frame)} rows, "
        f"{len(model_version.profile.features)} features, "
        f"threshold {model_version.threshold:.6g}; saved to {path}"
    )
    if register:
        _register(settings, model_version)


def _register(settings: Settings, model_version) -> None:
    from streams.registration import build_registration, publish_registration

    registration = build_registration(model_version, settings.store)
    try:
        publish_registration(settings, registration)
    except OddwatchError as error:
        raise OddwatchError(
            f"the artifact is saved, but registering it failed: {error}. Run "
            "`oddwatch train` again with --overwrite once Kafka is up, or pass "
            "--no-register to train without Kafka"
        ) from error
    typer.echo(
        f"registered {registration.model} version {registration.version} on "
        f"{settings.topic('models')}"
    )


@app.command()
def score(
    model: ModelOption,
    version: VersionOption,
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Output file, .csv or .parquet.")],
    learn: Annotated[
        bool,
        typer.Option(help="Learn from the inliers while scoring, as the stream does."),
    ] = True,
    store: StoreOption = None,
) -> None:
    """Score a file offline with the stream's code; one output row per input row."""
    from detectors import load_model, read_table

    settings = Settings.from_env(store=store)
    model_version = load_model(settings.store, model, version)
    frame = read_table(data)
    features = list(model_version.profile.features)
    absent = [name for name in features if name not in frame.columns]
    if len(absent) == len(features):
        raise OddwatchError(
            f"none of the {len(features)} features of {model} version {version} is "
            f"a column of {data}: expected {', '.join(features)}; got "
            f"{', '.join(map(str, frame.columns))}"
        )
    if absent:
        typer.echo(
            f"warning: {data} has no column for {', '.join(absent)}; those "
            "features get the status missing in every row",
            err=True,
        )
    result = model_version.score_frame(frame, learn=learn)
    if out.suffix == ".parquet":
        result.to_parquet(out, index=False)
    else:
        result.to_csv(out, index=False)
    outliers = int(result["is_outlier"].sum())
    typer.echo(f"scored {len(result)} rows, {outliers} outliers; wrote {out}")


@app.command()
def worker(
    kafka: KafkaOption = None,
    clickhouse: ClickHouseOption = None,
    store: StoreOption = None,
    topic_prefix: TopicPrefixOption = None,
    group: Annotated[
        str | None, typer.Option(help="Kafka consumer group. [env: ODDWATCH_GROUP]")
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Most events processed at once. [env: ODDWATCH_BLOCK_SIZE]"
        ),
    ] = None,
    reader: Annotated[
        str | None,
        typer.Option(
            help="blocks (confluent-kafka, whole blocks per call) or faust (a Faust "
            "agent, one message at a time). [env: ODDWATCH_READER]"
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error.")
    ] = None,
) -> None:
    """Consume prediction events, check and score them, and write them to ClickHouse."""
    from streams.worker import run_worker

    settings = Settings.from_env(
        kafka=kafka,
        clickhouse=clickhouse,
        store=store,
        topic_prefix=topic_prefix,
        group=group,
        block_size=block_size,
        reader=reader,
        log_level=log_level,
    )
    run_worker(settings)


@app.command()
def replay(
    data: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="CSV or Parquet file of feature rows, or .jsonl of ready events.",
        ),
    ],
    model: Annotated[
        str | None, typer.Option(help="Model name; needed for CSV and Parquet.")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(min=1, help="Model version; needed for CSV and Parquet."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="Column not sent as a feature, such as the label. Repeatable."
        ),
    ] = None,
    prediction: Annotated[
        list[str] | None,
        typer.Option(help="Column sent in the event's prediction object. Repeatable."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(min=0.1, help="Events per second; as fast as possible if unset."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Send at most this many rows.")
    ] = None,
    kafka: KafkaOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Produce a file to the predictions topic as prediction events.

    A .jsonl file is sent line by line as it is, which also re-sends dead
    letters or hand-written events; other files are read as tables whose rows
    become events of --model and --version.
    """
    from streams.replay import replay_frame, replay_lines

    settings = Settings.from_env(kafka=kafka, topic_prefix=topic_prefix)
    if data.suffix == ".jsonl":
        sent = replay_lines(data, settings, rate=rate, limit=limit)
    else:
        from detectors import read_table

        if model is None or version is None:
            raise OddwatchError(
                f"--model and --version are required to replay {data.name}, "
                "because its rows carry only features"
            )
        frame = read_table(data)
        if limit is not None:
            frame = frame.head(limit)
        sent = replay_frame(
            frame,
            settings,
            model=model,
            version=version,
            exclude=exclude or [],
            prediction_columns=prediction or [],
            rate=rate,
        )
    typer.echo(f"sent {sent} events to {settings.topic('predictions')}")


@app.command()
def redeliver(
    reason: Annotated[
        list[str] | None,
        typer.Option(
            help="Re-send only dead letters with this reason code, such as "
            "model_not_registered. Repeatable; all reasons if unset."
        ),
    ] = None,
    kafka: KafkaOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Send dead letters back to the predictions topic once their cause is fixed."""
    from streams.redeliver import redeliver as redeliver_letters

    settings = Settings.from_env(kafka=kafka, topic_prefix=topic_prefix)
    sent, skipped = redeliver_letters(settings, reason or [])
    typer.echo(
        f"re-sent {sent} dead letters to {settings.topic('predictions')}, "
        f"skipped {skipped}"
    )


models_app = typer.Typer(
    help="List model versions, retire them or change their alert rate.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
metrics_app = typer.Typer(
    help="Change a version's custom metrics.", no_args_is_help=True
)
app.add_typer(metrics_app, name="metrics")


@models_app.command("list")
def models_list(
    kafka: KafkaOption = None, topic_prefix: TopicPrefixOption = None
) -> None:
    """List every registered version with its state, threshold and checks."""
    from streams.lifecycle import list_registrations

    settings = Settings.from_env(kafka=kafka, topic_prefix=topic_prefix)
    registrations = list_registrations(settings)
    if not registrations:
        typer.echo(f"no model versions registered on {settings.topic('models')}")
        return
    typer.echo(
        f"{'model':<20} {'version':>7} {'state':<8} {'threshold':>10} "
        f"{'alert rate':>10} {'features':>8}  metrics"
    )
    for item in registrations:
        metrics = ", ".join(metric.name for metric in item.metrics) or "-"
        typer.echo(
            f"{item.model:<20} {item.version:>7} {item.state:<8} "
            f"{item.threshold:>10.4g} {item.target_alert_rate:>10.2%} "
            f"{len(item.features):>8}  {metrics}"
        )


@models_app.command("retire")
def models_retire(
    model: ModelOption,
    version: VersionOption,
    kafka: KafkaOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Retire a version: its events go to the dead-letter topic from now on."""
    from streams.lifecycle import retire

    settings = Settings.from_env(kafka=kafka, topic_prefix=topic_prefix)
    retire(settings, model, version)
    typer.echo(f"retired {model} version {version}")


@models_app.command("set-alert-rate")
def models_set_alert_rate(
    model: ModelOption,
    version: VersionOption,
    rate: Annotated[
        float,
        typer.Option(min=0.0001, max=0.5, help="Share of normal events to alert on."),
    ],
    store: StoreOption = None,
    kafka: KafkaOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Change the target alert rate; the threshold is derived without refitting."""
    from streams.lifecycle import set_alert_rate

    settings = Settings.from_env(store=store, kafka=kafka, topic_prefix=topic_prefix)
    registration = set_alert_rate(settings, model, version, rate)
    typer.echo(
        f"{model} version {version}: target alert rate {rate:.2%}, threshold "
        f"{registration.threshold:.6g}; running workers use it from their next block"
    )


@metrics_app.command("set")
def metrics_set(
    model: ModelOption,
    version: VersionOption,
    file: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, help="JSON list of metric definitions."
        ),
    ],
    store: StoreOption = None,
    kafka: KafkaOption = None,
    topic_prefix: TopicPrefixOption = None,
) -> None:
    """Replace the custom metrics; running workers use them from their next block."""
    from detectors.metrics import load_metric_configs
    from streams.lifecycle import set_version_metrics

    settings = Settings.from_env(store=store, kafka=kafka, topic_prefix=topic_prefix)
    configs = load_metric_configs(file)
    set_version_metrics(settings, model, version, configs)
    names = ", ".join(config.name for config in configs) or "none"
    typer.echo(f"{model} version {version}: custom metrics {names}")


@app.command()
def sql(
    query: Annotated[
        str, typer.Argument(help="SQL to run, e.g. 'SELECT count() FROM events'.")
    ],
    output_format: Annotated[
        str, typer.Option("--format", help="table, csv or json.")
    ] = "table",
    clickhouse: ClickHouseOption = None,
) -> None:
    """Run SQL against oddwatch's ClickHouse database and print the result."""
    from streams.storage import Storage

    settings = Settings.from_env(clickhouse=clickhouse)
    with Storage.connect(settings.clickhouse) as storage:
        frame = storage.query_frame(query)
    if output_format == "csv":
        typer.echo(frame.to_csv(index=False), nl=False)
    elif output_format == "json":
        typer.echo(
            frame.to_json(orient="records", lines=True, date_format="iso"), nl=False
        )
    elif output_format == "table":
        typer.echo(frame.to_string(index=False) if len(frame) else "(no rows)")
    else:
        raise OddwatchError(
            f"--format {output_format!r} is invalid; expected table, csv or json"
        )


@app.command()
def demo(
    data_dir: Annotated[
        Path,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Folder with adult.data.gz and adult.test.gz.",
        ),
    ] = Path("deploy/demo/data"),
    kafka: KafkaOption = None,
) -> None:
    """Train on UCI Adult, stream its test file through a worker, query ClickHouse."""
    from streams.demo import run_demo

    run_demo(Settings.from_env(kafka=kafka), data_dir)


@app.command()
def report(
    model: ModelOption,
    version: VersionOption,
    out: Annotated[
        Path, typer.Option(dir_okay=False, help="HTML file to write.")
    ] = Path("report.html"),
    since: Annotated[
        str | None,
        typer.Option(
            help="Earliest time to show, ISO 8601, e.g. 2026-12-04T15:00:00Z; "
            "a time without offset is UTC. All stored events if unset."
        ),
    ] = None,
    detail_batches: Annotated[
        int,
        typer.Option(min=0, help="Most recent batches whose requests the page lists."),
    ] = 50,
    clickhouse: ClickHouseOption = None,
) -> None:
    """Write an HTML report of one model version that opens offline in a browser.

    It shows the check x batch grid, outlier scores against the threshold,
    the batches with their requests, the alerts with their reasons, and the
    drift per feature once it is stored. With the embedded engine, stop the
    worker first: only one process at a time can open its directory.
    """
    from datetime import UTC, datetime

    from streams.report import write_report
    from streams.storage import Storage

    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise OddwatchError(
                f"--since {since!r} is not an ISO 8601 time; expected e.g. "
                "2026-12-04T15:00:00Z or 2026-12-04"
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    settings = Settings.from_env(clickhouse=clickhouse)
    with Storage.connect(settings.clickhouse, migrate=False) as storage:
        data = write_report(
            storage,
            out,
            model=model,
            version=version,
            since=start,
            detail_batches=detail_batches,
        )
    typer.echo(
        f"wrote {out}: {data.events} events, {data.outliers} outliers, "
        f"{len(data.batches)} batches, {data.alert_count} alerts"
    )


def main() -> None:
    """Run the command line; print oddwatch's own errors without a traceback."""
    from detectors import DetectorError

    try:
        level = Settings.from_env().log_level
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        app()
    except (OddwatchError, DetectorError) as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
