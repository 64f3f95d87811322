"""The Prometheus exposition of /metrics, under vLLM's metric names so its Grafana boards fit.

Values are not kept in this process: a collector turns the running totals in the database
(monitoring.selectors) and the current load into metric families, and
prometheus-client writes the text format. That is why no multiprocess directory is needed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from .load import ModelLoad
from .metric_totals import HISTOGRAMS, ModelTotals

LABEL = "model_name"  # vLLM's label for the served model

HISTOGRAM_NAMES = {
    "e2e": ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
    "ttft": ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
    "queue": (
        "vllm:request_queue_time_seconds",
        "Histogram of time a request waited for a worker in seconds (0 in embedded mode).",
    ),
}


class RequestMetricsCollector:
    """One scrape's worth of metric families; `load` is None when it could not be read."""

    def __init__(self, totals: dict[str, ModelTotals], load: dict[str, ModelLoad] | None):
        self.totals = totals
        self.load = load

    def collect(self):
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Number of requests in model execution batches.", labels=[LABEL]
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed (for a slot, or for a worker).",
            labels=[LABEL],
        )
        kv_usage = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage (cells held by running requests; "
            "only engines that report their KV cache).",
            labels=[LABEL],
        )
        for model, load in sorted((self.load or {}).items()):
            running.add_metric([model], load.running)
            waiting.add_metric([model], load.waiting)
            if load.kv_cache_usage is not None:
                kv_usage.add_metric([model], load.kv_cache_usage)
        yield from (running, waiting, kv_usage)

        # CounterMetricFamily adds the `_total` suffix: these are vllm:prompt_tokens_total and so on.
        prompt = CounterMetricFamily("vllm:prompt_tokens", "Number of prefill tokens processed.", labels=[LABEL])
        generation = CounterMetricFamily(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels=[LABEL]
        )
        success = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.", labels=[LABEL, "finished_reason"]
        )
        failure = CounterMetricFamily(
            "inference_platform_request_failure",
            "Requests that reached a model and ended in an error (not a vLLM metric).",
            labels=[LABEL],
        )
        # vLLM's prefix cache counters, in tokens: prompt tokens looked up, and those found cached.
        queries = CounterMetricFamily(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", labels=[LABEL]
        )
        hits = CounterMetricFamily(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", labels=[LABEL]
        )
        histograms = {
            name: HistogramMetricFamily(metric, help_text, labels=[LABEL])
            for name, (metric, help_text) in HISTOGRAM_NAMES.items()
        }
        for model, totals in sorted(self.totals.items()):
            prompt.add_metric([model], totals.prompt_tokens)
            generation.add_metric([model], totals.generation_tokens)
            queries.add_metric([model], totals.prefix_cache_queries)
            hits.add_metric([model], totals.prefix_cache_hits)
            for reason, count in totals.finished.items():
                success.add_metric([model, reason], count)
            failure.add_metric([model], totals.failed)
            for name, (_, bounds) in HISTOGRAMS.items():
                histogram = totals.histograms[name]
                buckets = [(floatToGoString(bound), count) for bound, count in zip(bounds, histogram.buckets)]
                histograms[name].add_metric(
                    [model], buckets + [("+Inf", histogram.count)], sum_value=histogram.sum_seconds
                )
        yield from (prompt, generation, queries, hits, success, failure, *histograms.values())


# Always the classic text format, whatever the Accept header prefers: prometheus-client 0.26
# writes OpenMetrics 1.0 sample names with `:` turned into `_` but leaves HELP/TYPE alone
# (prometheus/client_python#1177), which would rename vLLM's metrics. Every Prometheus accepts 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def exposition(totals: dict[str, ModelTotals], load: dict[str, ModelLoad] | None) -> bytes:
    """The body of one scrape in Prometheus text format 0.0.4."""
    registry = CollectorRegistry(auto_describe=False)  # no describe(): collect() runs once, at encoding
    registry.register(RequestMetricsCollector(totals, load))
    return generate_latest(registry)
