"""Conveyor's Kubernetes resources, made from values (values.py) and the topic catalog.

For each service: a Deployment whose probes are the service's own health (`/healthz` alive,
`/readyz` ready: broker and database answering, consumers assigned, changelog read), with
resource requests, non-root and a read-only root file system; a Service; a PodDisruptionBudget;
and, for the stream services, KEDA's ScaledObject on their consumer groups' lag, never above
the partitions of the topics they read. Credentials come from Secrets only: those the operators
make (Strimzi's KafkaUser and cluster CA, CloudNativePG's application secret) or those the
installation guide has one create (the token file, the services' own tokens, an external
Kafka's or database's credentials).

With `kafka.provider: strimzi`, the Kafka cluster (KRaft, one node pool, a TLS listener with
SCRAM-SHA-512 and simple authorization), a KafkaTopic per topic of the catalog and dead-letter
topic (the services then create none), and a KafkaUser per service and one for applications,
each allowed what it needs. With `postgres.provider: cloudnativepg`, a CloudNativePG Cluster.
"""

from __future__ import annotations

from typing import Any

from conveyor_contracts import CATALOG, CONSOLE, TopicSpec
from conveyor_contracts.strimzi import kafka_topics

from .values import CONSOLE_PORT, NO_DATABASE, PORTS, STREAM_SERVICES, Resources, Values

Resource = dict[str, Any]

TOKENS_DIR = "/etc/conveyor/tokens"
KAFKA_CA_DIR = "/etc/conveyor/kafka-ca"
KAFKA_TLS_PORT = 9093
RUN_AS = 10001  # any unprivileged uid: the images' files are world-readable
# Services that call others with a token of their own (the trainer the registry, serving the
# feature service): the key of each in the service tokens Secret.
CALLERS = ("trainer", "serving")
# Seconds a stopping pod gets: overlapping batches finish and commit (bus.STOP_GRACE_S); the
# trainer waits for the runs under way.
GRACE_S = {"trainer": 600}
DEFAULT_GRACE_S = 60
# Who outside the platform writes and reads which topics (applications, the command line,
# product UIs: the catalog's producers and consumers that are not services).
OUTSIDE = frozenset({"apps", "cli", "product UIs"})


def group_id(service: str, topic: TopicSpec) -> str:
    """The consumer group a service reads `topic` in (conveyor_bus.Bus.consume)."""
    return f"conveyor-{service}.{topic.name}"


def consumed(service: str) -> list[TopicSpec]:
    """The topics a service reads in a consumer group: the catalog's consumers, less the
    changelog every replica reads whole without a group."""
    return [t for t in CATALOG if service in t.consumers and t.name != "registry.events.v1"]


def max_replicas(service: str) -> int:
    """Most replicas that have something to read: the fewest partitions of its topics."""
    return min(t.partitions for t in consumed(service))


class Names:
    def __init__(self, values: Values) -> None:
        self.values = values
        self.prefix = values.prefix

    def service(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def kafka_user(self, name: str) -> str:
        return f"{self.prefix}-{name}"  # Strimzi names the user's Secret the same

    @property
    def apps_user(self) -> str:
        return f"{self.prefix}-apps"

    @property
    def bootstrap(self) -> str:
        kafka = self.values.kafka
        if kafka.provider == "external":
            assert kafka.bootstrap_servers is not None
            return kafka.bootstrap_servers
        return (
            f"{kafka.strimzi.cluster}-kafka-bootstrap.{self.values.namespace}.svc:{KAFKA_TLS_PORT}"
        )


def labels(values: Values, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"{values.prefix}-{component}",
        "app.kubernetes.io/instance": values.prefix,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "conveyor",
        "app.kubernetes.io/version": values.image.tag,
        "app.kubernetes.io/managed-by": "conveyor-kube-render",
    }


def selector(values: Values, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"{values.prefix}-{component}",
        "app.kubernetes.io/instance": values.prefix,
    }


def _meta(values: Values, name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": values.namespace,
        "labels": labels(values, component),
        **extra,
    }


def render(values: Values) -> list[Resource]:
    """Every resource of the installation, in the order to apply them."""
    out: list[Resource] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": values.namespace,
                "labels": {"app.kubernetes.io/part-of": "conveyor"},
            },
        }
    ]
    if values.kafka.provider == "strimzi":
        out += strimzi(values)
    if values.postgres.provider == "cloudnativepg":
        out.append(cloudnativepg(values))
    for name in PORTS:
        out += service_resources(values, name)
    if values.console.enabled:
        out += console_resources(values)
    return out


# --- Kafka through Strimzi ----------------------------------------------------------------------


def strimzi(values: Values) -> list[Resource]:
    config = values.kafka.strimzi
    cluster = config.cluster
    replicas = config.replicas
    in_sync = 2 if replicas >= 3 else 1
    kafka = {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "Kafka",
        "metadata": _meta(
            values,
            cluster,
            "kafka",
            annotations={"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"},
        ),
        "spec": {
            "kafka": {
                "listeners": [
                    {
                        "name": "tls",
                        "port": KAFKA_TLS_PORT,
                        "type": "internal",
                        "tls": True,
                        "authentication": {"type": "scram-sha-512"},
                    }
                ],
                "authorization": {"type": "simple"},
                "config": {
                    "offsets.topic.replication.factor": min(replicas, 3),
                    "transaction.state.log.replication.factor": min(replicas, 3),
                    "transaction.state.log.min.isr": in_sync,
                    "default.replication.factor": min(replicas, 3),
                    "min.insync.replicas": in_sync,
                    # Topics are the KafkaTopics below: none made by a client's mistake.
                    "auto.create.topics.enable": False,
                },
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
    }
    volume: dict[str, Any] = {
        "id": 0,
        "type": "persistent-claim",
        "size": config.storage_size,
        "deleteClaim": False,
    }
    if config.storage_class:
        volume["class"] = config.storage_class
    pool = {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaNodePool",
        "metadata": _meta(values, f"{cluster}-pool", "kafka")
        | {"labels": labels(values, "kafka") | {"strimzi.io/cluster": cluster}},
        "spec": {
            "replicas": replicas,
            "roles": ["controller", "broker"],
            "storage": {"type": "jbod", "volumes": [volume]},
        },
    }
    topics = kafka_topics(
        cluster, replicas=min(config.topic_replicas, replicas), namespace=values.namespace
    )
    names = Names(values)
    users = [kafka_user(values, names.kafka_user(s), service_acls(s)) for s in PORTS]
    users.append(kafka_user(values, names.apps_user, apps_acls()))
    return [kafka, pool, *topics, *users]


def _acl(kind: str, name: str, operations: list[str], pattern: str = "literal") -> dict[str, Any]:
    return {
        "resource": {"type": kind, "name": name, "patternType": pattern},
        "operations": operations,
    }


def service_acls(service: str) -> list[dict[str, Any]]:
    """What a service may do: read and write the platform's topics and dead-letter topics
    (each service writes the dead letters of what it reads, and the outbox relays read back
    what they published), answer on reply topics, and read in its own consumer groups."""
    acls = [
        _acl("topic", name, ["Describe", "Read", "Write"])
        for spec in CATALOG
        for name in (spec.name, spec.dlq)
    ]
    acls.append(_acl("topic", "replies.", ["Describe", "Write"], "prefix"))
    acls.append(_acl("group", f"conveyor-{service}.", ["Describe", "Read"], "prefix"))
    return acls


def apps_acls() -> list[dict[str, Any]]:
    """What applications, product UIs and the command line may do: send to the topics they
    produce, read those they consume, and keep reply topics of their own."""
    acls = []
    for spec in CATALOG:
        operations = []
        if OUTSIDE & set(spec.producers):
            operations += ["Describe", "Write"]
        if OUTSIDE & set(spec.consumers):
            operations += ["Describe", "Read"]
        if operations:
            acls.append(_acl("topic", spec.name, sorted(set(operations))))
    acls.append(
        _acl("topic", "replies.", ["Create", "Delete", "Describe", "Read", "Write"], "prefix")
    )
    return acls


def kafka_user(values: Values, name: str, acls: list[dict[str, Any]]) -> Resource:
    cluster = values.kafka.strimzi.cluster
    return {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaUser",
        "metadata": _meta(values, name, "kafka")
        | {"labels": labels(values, "kafka") | {"strimzi.io/cluster": cluster}},
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": acls},
        },
    }


# --- Postgres through CloudNativePG -------------------------------------------------------------


def cloudnativepg(values: Values) -> Resource:
    config = values.postgres.cloudnativepg
    storage: dict[str, Any] = {"size": config.storage_size}
    if config.storage_class:
        storage["storageClass"] = config.storage_class
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": _meta(values, config.cluster, "database"),
        "spec": {
            "instances": config.instances,
            "storage": storage,
            # Its `<cluster>-app` Secret (key `uri`) is every service's DATABASE_URL; each
            # service keeps its own schema in this one database.
            "bootstrap": {"initdb": {"database": "conveyor", "owner": "conveyor"}},
            "postgresql": {"parameters": {"max_connections": str(config.max_connections)}},
        },
    }


# --- the services -------------------------------------------------------------------------------


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def kafka_env(values: Values, service: str) -> list[dict[str, Any]]:
    kafka = values.kafka
    names = Names(values)
    env: list[dict[str, Any]] = [{"name": "KAFKA_BOOTSTRAP_SERVERS", "value": names.bootstrap}]
    if kafka.provider == "strimzi":
        env += [
            {"name": "KAFKA_SECURITY_PROTOCOL", "value": "SASL_SSL"},
            {"name": "KAFKA_SASL_MECHANISM", "value": "SCRAM-SHA-512"},
            {"name": "KAFKA_SASL_USERNAME", "value": names.kafka_user(service)},
            _secret_env("KAFKA_SASL_PASSWORD", names.kafka_user(service), "password"),
            {"name": "KAFKA_SSL_CAFILE", "value": f"{KAFKA_CA_DIR}/ca.crt"},
            {"name": "KAFKA_CREATE_TOPICS", "value": "false"},
        ]
        return env
    env.append({"name": "KAFKA_SECURITY_PROTOCOL", "value": kafka.security_protocol})
    if kafka.uses_sasl:
        assert kafka.sasl_mechanism is not None and kafka.credentials_secret is not None
        secret = kafka.credentials_secret
        env.append({"name": "KAFKA_SASL_MECHANISM", "value": kafka.sasl_mechanism})
        if kafka.sasl_mechanism == "OAUTHBEARER":
            assert kafka.oauth_token_url is not None
            env.append({"name": "KAFKA_SASL_OAUTH_TOKEN_URL", "value": kafka.oauth_token_url})
            env.append(_secret_env("KAFKA_SASL_OAUTH_CLIENT_ID", secret, "client-id"))
            env.append(_secret_env("KAFKA_SASL_OAUTH_CLIENT_SECRET", secret, "client-secret"))
            if kafka.oauth_scope:
                env.append({"name": "KAFKA_SASL_OAUTH_SCOPE", "value": kafka.oauth_scope})
        else:
            env.append(_secret_env("KAFKA_SASL_USERNAME", secret, "username"))
            env.append(_secret_env("KAFKA_SASL_PASSWORD", secret, "password"))
    if kafka.ca is not None:
        env.append({"name": "KAFKA_SSL_CAFILE", "value": f"{KAFKA_CA_DIR}/{kafka.ca.key}"})
    env.append({"name": "KAFKA_CREATE_TOPICS", "value": str(kafka.create_topics).lower()})
    return env


def _kafka_ca(values: Values) -> tuple[str, str] | None:
    """The Secret and key of the brokers' CA, when the pods need one mounted."""
    kafka = values.kafka
    if kafka.provider == "strimzi":
        return f"{kafka.strimzi.cluster}-cluster-ca-cert", "ca.crt"
    if kafka.ca is not None:
        return kafka.ca.name, kafka.ca.key
    return None


def database_secret(values: Values) -> tuple[str, str]:
    if values.postgres.provider == "cloudnativepg":
        return f"{values.postgres.cloudnativepg.cluster}-app", "uri"
    return values.postgres.url.name, values.postgres.url.key


def container_env(values: Values, service: str) -> list[dict[str, Any]]:
    names = Names(values)
    env: list[dict[str, Any]] = [
        {"name": "HTTP_HOST", "value": "0.0.0.0"},  # the pod's own interfaces
        {"name": "HTTP_PORT", "value": str(PORTS[service])},
        *kafka_env(values, service),
    ]
    if service not in NO_DATABASE:
        env.append(_secret_env("DATABASE_URL", *database_secret(values)))
    env.append(
        {"name": "REGISTRY_URL", "value": f"http://{names.service('registry')}:{PORTS['registry']}"}
    )
    if service == "serving":
        env.append(
            {
                "name": "FEATURE_URL",
                "value": f"http://{names.service('feature')}:{PORTS['feature']}",
            }
        )
    env.append({"name": "CONVEYOR_TOKENS_FILE", "value": f"{TOKENS_DIR}/tokens.json"})
    if service in CALLERS:
        env.append(_secret_env("CONVEYOR_TOKEN", values.service_tokens_secret, service))
    env.append({"name": "OTEL_SERVICE_NAME", "value": f"conveyor-{service}"})
    if values.otel_endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": values.otel_endpoint})
    env.append({"name": "LOG_LEVEL", "value": "INFO"})
    given = values.services[service].env
    env = [e for e in env if e["name"] not in given]
    env += [{"name": k, "value": v} for k, v in sorted(given.items())]
    return env


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def deployment(values: Values, service: str) -> Resource:
    config = values.services[service]
    return _deployment(
        values,
        service,
        port=PORTS[service],
        env=container_env(values, service),
        resources=config.resources,
        replicas=None if autoscaled(values, service) else config.replicas,
        kafka=True,
    )


def _deployment(
    values: Values,
    service: str,
    *,
    port: int,
    env: list[dict[str, Any]],
    resources: Resources,
    replicas: int | None,
    kafka: bool,
) -> Resource:
    """A component's Deployment; `replicas` None: KEDA's to set, never reset by an apply."""
    name = Names(values).service(service)
    mounts: list[dict[str, Any]] = [
        {"name": "tokens", "mountPath": TOKENS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # an emptyDir of the pod's own
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "tokens",
            "secret": {
                "secretName": values.tokens_secret,
                "items": [{"key": "tokens.json", "path": "tokens.json"}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if kafka and (ca := _kafka_ca(values)) is not None:
        secret, key = ca
        mounts.append({"name": "kafka-ca", "mountPath": KAFKA_CA_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "kafka-ca",
                "secret": {"secretName": secret, "items": [{"key": key, "path": key}]},
            }
        )
    container = {
        "name": service,
        "image": f"{values.image.registry}/conveyor-{service}:{values.image.tag}",
        "imagePullPolicy": values.image.pull_policy,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": resources.cpu, "memory": resources.memory},
            "limits": {"memory": resources.memory_limit},
        },
        # Up to three minutes to start: the broker awaited (KAFKA_CONNECT_TIMEOUT_S), the
        # registry's changelog read, serving's models loaded.
        "startupProbe": _probe("/healthz", 5, 36),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 2),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(values, service)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": labels(values, service),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": GRACE_S.get(service, DEFAULT_GRACE_S),
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "runAsGroup": RUN_AS,
                    "fsGroup": RUN_AS,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector(values, service)},
                    }
                ],
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if values.image.pull_secrets:
        spec["template"]["spec"]["imagePullSecrets"] = [
            {"name": s} for s in values.image.pull_secrets
        ]
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(values, name, service),
        "spec": spec,
    }


def autoscaled(values: Values, service: str) -> bool:
    return service in STREAM_SERVICES and values.services[service].autoscaling.enabled


def service_resources(values: Values, service: str) -> list[Resource]:
    out = [deployment(values, service), *_reachable(values, service, PORTS[service])]
    if autoscaled(values, service):
        out += keda(values, service)
    return out


def _reachable(values: Values, service: str, port: int) -> list[Resource]:
    """A component's Service (its port, by name) and its PodDisruptionBudget."""
    name = Names(values).service(service)
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(values, name, service),
            "spec": {
                "selector": selector(values, service),
                "ports": [
                    {
                        "name": "http",
                        "port": port,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(values, name, service),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(values, service)}},
        },
    ]


# --- the console --------------------------------------------------------------------------------


def console_resources(values: Values) -> list[Resource]:
    """The web application for people: no Kafka, no database; one replica, since it keeps
    sessions in memory (a second would not know who signed in on the first)."""
    names = Names(values)
    console = values.console
    env: list[dict[str, Any]] = [
        {"name": "HTTP_HOST", "value": "0.0.0.0"},
        {"name": "HTTP_PORT", "value": str(CONSOLE_PORT)},
        {
            "name": "REGISTRY_URL",
            "value": f"http://{names.service('registry')}:{PORTS['registry']}",
        },
        {"name": "MONITOR_URL", "value": f"http://{names.service('monitor')}:{PORTS['monitor']}"},
        {"name": "TRAINER_URL", "value": f"http://{names.service('trainer')}:{PORTS['trainer']}"},
        {"name": "CONVEYOR_TOKENS_FILE", "value": f"{TOKENS_DIR}/tokens.json"},
    ]
    env = [e for e in env if e["name"] not in console.env]
    env += [{"name": k, "value": v} for k, v in sorted(console.env.items())]
    made = _deployment(
        values,
        CONSOLE,
        port=CONSOLE_PORT,
        env=env,
        resources=console.resources,
        replicas=1,
        kafka=False,
    )
    return [made, *_reachable(values, CONSOLE, CONSOLE_PORT)]


# --- autoscaling on consumer lag through KEDA ---------------------------------------------------

KEDA_SASL = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
    "OAUTHBEARER": "oauthbearer",
}


def keda(values: Values, service: str) -> list[Resource]:
    """A ScaledObject with one Kafka trigger per consumer group of the service (KEDA scales to
    the largest of their wishes), and the TriggerAuthentication its scaler connects with: the
    service's own credentials."""
    config = values.services[service].autoscaling
    names = Names(values)
    name = names.service(service)
    ceiling = max_replicas(service)
    highest = config.max_replicas or ceiling
    if highest > ceiling:
        raise ValueError(
            f"services.{service}.autoscaling.max_replicas {highest} is above the {ceiling} "
            f"partitions of the topics {service} reads: the replicas past them would read nothing"
        )
    if config.min_replicas > highest:
        raise ValueError(f"services.{service}.autoscaling.min_replicas is above max_replicas")
    kafka = values.kafka
    mechanism = "SCRAM-SHA-512" if kafka.provider == "strimzi" else kafka.sasl_mechanism
    auth: list[dict[str, Any]] = []
    from_env: list[dict[str, Any]] = []
    metadata_common: dict[str, str] = {}
    if kafka.uses_sasl and mechanism is not None:
        metadata_common["sasl"] = KEDA_SASL[mechanism]
        if kafka.provider == "strimzi":
            from_env.append(
                {"parameter": "username", "name": "KAFKA_SASL_USERNAME", "containerName": service}
            )
            auth.append(
                {"parameter": "password", "name": names.kafka_user(service), "key": "password"}
            )
        elif mechanism == "OAUTHBEARER":
            assert kafka.credentials_secret is not None
            auth += [
                {"parameter": "username", "name": kafka.credentials_secret, "key": "client-id"},
                {"parameter": "password", "name": kafka.credentials_secret, "key": "client-secret"},
            ]
            from_env.append(
                {
                    "parameter": "oauthTokenEndpointUri",
                    "name": "KAFKA_SASL_OAUTH_TOKEN_URL",
                    "containerName": service,
                }
            )
        else:
            assert kafka.credentials_secret is not None
            auth += [
                {"parameter": "username", "name": kafka.credentials_secret, "key": "username"},
                {"parameter": "password", "name": kafka.credentials_secret, "key": "password"},
            ]
    if kafka.uses_tls:
        metadata_common["tls"] = "enable"
        if (ca := _kafka_ca(values)) is not None:
            auth.append({"parameter": "ca", "name": ca[0], "key": ca[1]})
    triggers = []
    for topic in consumed(service):
        trigger: dict[str, Any] = {
            "type": "kafka",
            "name": topic.name.replace(".", "-"),
            "metadata": {
                "bootstrapServers": names.bootstrap,
                "consumerGroup": group_id(service, topic),
                "topic": topic.name,
                "lagThreshold": str(config.lag_threshold),
                "offsetResetPolicy": "earliest",
                "allowIdleConsumers": "false",
                **metadata_common,
            },
        }
        if auth or from_env:
            trigger["authenticationRef"] = {"name": f"{name}-kafka"}
        triggers.append(trigger)
    out: list[Resource] = []
    if auth or from_env:
        spec: dict[str, Any] = {}
        if auth:
            spec["secretTargetRef"] = auth
        if from_env:
            spec["env"] = from_env
        out.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": _meta(values, f"{name}-kafka", service),
                "spec": spec,
            }
        )
    out.append(
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": _meta(values, name, service),
            "spec": {
                "scaleTargetRef": {"name": name},
                "minReplicaCount": config.min_replicas,
                "maxReplicaCount": highest,
                "pollingInterval": 15,
                "cooldownPeriod": 300,
                "advanced": {
                    "horizontalPodAutoscalerConfig": {
                        # A rebalance costs every replica of the group a pause: fewer, later
                        # scale-downs.
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}
                    }
                },
                "triggers": triggers,
            },
        }
    )
    return out
