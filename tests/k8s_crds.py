"""What the operators' documentation requires of their custom resources, as JSON Schemas: the
fields each must have, the values each takes, and no field the operator would not know at the
levels checked (a misspelt key is refused, as the API server's structural schemas refuse it).

Kubernetes' own schemas (kubernetes-validate) know none of these kinds. Sources:
- Strimzi (kafka.strimzi.io/v1beta2): the "Strimzi API reference" — `Kafka` (KafkaSpec,
  KafkaClusterSpec, GenericKafkaListener, KafkaAuthorizationSimple, EntityOperatorSpec),
  `KafkaNodePool` (KafkaNodePoolSpec, JbodStorage, PersistentClaimStorage), `KafkaTopic`
  (KafkaTopicSpec), `KafkaUser` (KafkaUserSpec, KafkaUserScramSha512ClientAuthentication,
  AclRule, AclRuleTopicResource / AclRuleGroupResource); a node pool's and a topic's and a
  user's `strimzi.io/cluster` label, and KRaft with node pools by the Kafka's annotations.
- CloudNativePG (postgresql.cnpg.io/v1): the "API Reference" — ClusterSpec (`instances`,
  `storage` StorageConfiguration, `bootstrap.initdb` BootstrapInitDB, `postgresql.parameters`
  strings).
- KEDA (keda.sh/v1alpha1): "Scaling Deployments" (ScaledObject spec) and the "Apache Kafka"
  scaler (trigger metadata, a map of strings: `bootstrapServers`, `consumerGroup`, `topic`,
  `lagThreshold`, `offsetResetPolicy`, `allowIdleConsumers`, `sasl`, `tls`); "Authentication"
  (TriggerAuthentication `secretTargetRef`, `env`).
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _object(required: list[str], properties: dict[str, Any], *, closed: bool = True) -> dict:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _metadata(*, cluster_label: bool = False, annotations: dict | None = None) -> dict:
    properties: dict[str, Any] = {
        "name": NAME,
        "namespace": NAME,
        "labels": STRINGS,
        "annotations": annotations or STRINGS,
    }
    required = ["name", "namespace"]
    if cluster_label:
        properties["labels"] = {**STRINGS, "required": ["strimzi.io/cluster"]}
        required.append("labels")
    return _object(required, properties)


def _resource(api_version: str, kind: str, metadata: dict, spec: dict) -> dict:
    return _object(
        ["apiVersion", "kind", "metadata", "spec"],
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
    )


STRIMZI = "kafka.strimzi.io/v1beta2"

LISTENER = _object(
    ["name", "port", "type", "tls"],
    {
        "name": {"type": "string", "pattern": r"^[a-z0-9]{1,11}$"},
        "port": {"type": "integer", "minimum": 9092},
        "type": {
            "enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]
        },
        "tls": {"type": "boolean"},
        "authentication": _object(
            ["type"], {"type": {"enum": ["tls", "scram-sha-512", "oauth", "custom"]}}
        ),
        "configuration": {"type": "object"},
    },
)

KAFKA = _resource(
    STRIMZI,
    "Kafka",
    _metadata(
        annotations={
            **STRINGS,
            "required": ["strimzi.io/node-pools", "strimzi.io/kraft"],
            "properties": {
                "strimzi.io/node-pools": {"const": "enabled"},
                "strimzi.io/kraft": {"const": "enabled"},
            },
        }
    ),
    _object(
        ["kafka"],
        {
            "kafka": _object(
                ["listeners"],
                {
                    "version": {"type": "string"},
                    "metadataVersion": {"type": "string"},
                    "listeners": {"type": "array", "minItems": 1, "items": LISTENER},
                    "authorization": _object(
                        ["type"], {"type": {"enum": ["simple", "opa", "keycloak", "custom"]}}
                    ),
                    "config": {"type": "object"},
                },
            ),
            "entityOperator": _object(
                [], {"topicOperator": {"type": "object"}, "userOperator": {"type": "object"}}
            ),
        },
    ),
)

VOLUME = _object(
    ["id", "type", "size"],
    {
        "id": {"type": "integer", "minimum": 0},
        "type": {"enum": ["persistent-claim", "ephemeral"]},
        "size": {"type": "string"},
        "class": {"type": "string"},
        "deleteClaim": {"type": "boolean"},
    },
)

NODE_POOL = _resource(
    STRIMZI,
    "KafkaNodePool",
    _metadata(cluster_label=True),
    _object(
        ["replicas", "roles", "storage"],
        {
            "replicas": {"type": "integer", "minimum": 1},
            "roles": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": ["controller", "broker"]},
            },
            "storage": _object(
                ["type", "volumes"],
                {
                    "type": {"const": "jbod"},
                    "volumes": {"type": "array", "minItems": 1, "items": VOLUME},
                },
            ),
        },
    ),
)

TOPIC = _resource(
    STRIMZI,
    "KafkaTopic",
    _metadata(cluster_label=True),
    _object(
        ["partitions", "replicas"],
        {
            "topicName": {"type": "string"},
            "partitions": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
            "config": {"type": "object"},
        },
    ),
)

OPERATIONS = [
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "AlterConfigs",
    "DescribeConfigs",
    "IdempotentWrite",
    "All",
]
ACL = _object(
    ["resource", "operations"],
    {
        "resource": _object(
            ["type", "name"],
            {
                "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                "name": {"type": "string", "minLength": 1},
                "patternType": {"enum": ["literal", "prefix"]},
            },
        ),
        "operations": {"type": "array", "minItems": 1, "items": {"enum": OPERATIONS}},
        "host": {"type": "string"},
        "type": {"enum": ["allow", "deny"]},
    },
)

USER = _resource(
    STRIMZI,
    "KafkaUser",
    _metadata(cluster_label=True),
    _object(
        ["authentication"],
        {
            "authentication": _object(
                ["type"], {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}}
            ),
            "authorization": _object(
                ["type", "acls"],
                {"type": {"const": "simple"}, "acls": {"type": "array", "items": ACL}},
            ),
        },
    ),
)

CNPG_CLUSTER = _resource(
    "postgresql.cnpg.io/v1",
    "Cluster",
    _metadata(),
    _object(
        ["instances", "storage"],
        {
            "instances": {"type": "integer", "minimum": 1},
            "storage": _object(
                ["size"], {"size": {"type": "string"}, "storageClass": {"type": "string"}}
            ),
            "bootstrap": _object(
                ["initdb"],
                {
                    "initdb": _object(
                        ["database", "owner"],
                        {"database": {"type": "string"}, "owner": {"type": "string"}},
                    )
                },
            ),
            # Every parameter a string, as PostgreSQL's configuration takes them.
            "postgresql": _object([], {"parameters": STRINGS}),
        },
    ),
)

KAFKA_TRIGGER_METADATA = {
    **STRINGS,
    "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"],
    "properties": {
        "bootstrapServers": {"type": "string", "minLength": 1},
        "consumerGroup": {"type": "string", "minLength": 1},
        "topic": {"type": "string", "minLength": 1},
        "lagThreshold": {"type": "string", "pattern": r"^[1-9][0-9]*$"},
        "offsetResetPolicy": {"enum": ["earliest", "latest"]},
        "allowIdleConsumers": {"enum": ["true", "false"]},
        "sasl": {
            "enum": ["plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi", "none"]
        },
        "tls": {"enum": ["enable", "disable"]},
    },
}

SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    _metadata(),
    _object(
        ["scaleTargetRef", "triggers"],
        {
            "scaleTargetRef": _object(
                ["name"],
                {"name": NAME, "kind": {"type": "string"}, "apiVersion": {"type": "string"}},
            ),
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "advanced": {"type": "object"},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": _object(
                    ["type", "metadata"],
                    {
                        "type": {"const": "kafka"},
                        "name": {"type": "string"},
                        "metadata": KAFKA_TRIGGER_METADATA,
                        "authenticationRef": _object(["name"], {"name": NAME}),
                    },
                ),
            },
        },
    ),
)

TRIGGER_AUTHENTICATION = _resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    _metadata(),
    _object(
        [],
        {
            "secretTargetRef": {
                "type": "array",
                "items": _object(
                    ["parameter", "name", "key"],
                    {"parameter": {"type": "string"}, "name": NAME, "key": {"type": "string"}},
                ),
            },
            "env": {
                "type": "array",
                "items": _object(
                    ["parameter", "name"],
                    {
                        "parameter": {"type": "string"},
                        "name": {"type": "string"},
                        "containerName": {"type": "string"},
                    },
                ),
            },
        },
    ),
)

SCHEMAS = {
    (STRIMZI, "Kafka"): KAFKA,
    (STRIMZI, "KafkaNodePool"): NODE_POOL,
    (STRIMZI, "KafkaTopic"): TOPIC,
    (STRIMZI, "KafkaUser"): USER,
    ("postgresql.cnpg.io/v1", "Cluster"): CNPG_CLUSTER,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
}
