{{/* Names and labels shared by every template. */}}

{{- define "rljob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rljob.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rljob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rljob.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rljob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "rljob.labels" -}}
helm.sh/chart: {{ include "rljob.chart" . }}
{{ include "rljob.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rljob
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "rljob.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rljob.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference with its registry host replaced by global.imageRegistry, the way umbrella charts expect it of
every subchart (a mirror keeps the paths): the first path component is a registry host when it has a "." or a ":"
or is "localhost" (Docker's rule); a reference without one is Docker Hub's, and gets the registry prepended.
Called with (dict "ref" REFERENCE "context" $).
*/}}
{{- define "rljob.withRegistry" -}}
{{- $ref := .ref -}}
{{- $registry := trimSuffix "/" (toString ((.context.Values.global | default dict).imageRegistry | default "")) -}}
{{- if $registry -}}
{{- $parts := splitList "/" $ref -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $ref = join "/" (rest $parts) -}}
{{- end -}}
{{- $ref = printf "%s/%s" $registry $ref -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* The operator image: repository (registry replaced by global.imageRegistry), then digest or tag (appVersion). */}}
{{- define "rljob.image" -}}
{{- $repository := include "rljob.withRegistry" (dict "ref" .Values.image.repository "context" .) -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The jobs' default image (`--default-image`): repository and tag (appVersion-cpu, the build hack/images.sh tags for
VARIANT=cpu), or a whole reference given as a string; either way with global.imageRegistry's registry.
*/}}
{{- define "rljob.jobImage" -}}
{{- $image := .Values.jobDefaults.image -}}
{{- $ref := "" -}}
{{- if kindIs "string" $image -}}
{{- $ref = $image -}}
{{- else -}}
{{- $ref = printf "%s:%s" $image.repository (default (printf "%s-cpu" .Chart.AppVersion) $image.tag) -}}
{{- end -}}
{{- include "rljob.withRegistry" (dict "ref" $ref "context" .) -}}
{{- end -}}

{{/*
Cluster-scoped objects (ClusterRoles and their bindings, the aggregated roles) only with
rbac.clusterScoped; without it the release needs rights in its namespaces alone, which
only makes sense for an operator that watches exact namespaces.
*/}}
{{- define "rljob.clusterScoped" -}}
{{- if .Values.rbac.clusterScoped -}}true
{{- else if not .Values.watch.namespaces -}}
{{- fail "rbac.clusterScoped false needs watch.namespaces: an operator for every namespace needs a ClusterRole" -}}
{{- end -}}
{{- end -}}

{{/* Several replicas elect a leader through a Lease; one replica runs alone. */}}
{{- define "rljob.leaderElection" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/*
The operator's permissions on namespaced resources, derived from what it calls (controller/kube.py,
controller/apply.py, controller/operator.py); tests/integration/test_operator_rbac.py checks every
rule against the API server's audit log. Rendered into a ClusterRole (all namespaces) or into one
Role per watched namespace.
*/}}
{{- define "rljob.namespacedRules" -}}
# Watched (the operator's list-and-watch streams) and managed: head pods are created, deleted on
# suspend, deadline or retry, and at once when their job is deleted (with its StatefulSet); their log
# tail is kept in the job's status. `get` after a create
# answered "already exists", for every child below: whose is it (a deleted job's of the same name)?
- apiGroups: [""]
  resources: [pods]
  verbs: [create, delete, get, list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# The job's children, created once (deterministic names; deleted by the garbage collector). All but the claim
# are watched (list, watch) to be created again when deleted while their job lives.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [create, get]
# The head's Service too, deleted by the operator before the head pod when its job is deleted (else the
# endpoint controllers rewrite its Endpoints and EndpointSlice as the pod goes).
- apiGroups: [""]
  resources: [services]
  verbs: [create, delete, get, list, watch]
# The operator posts its own events on the jobs, and raises the count of one it posted when it repeats.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# The workers: watched, created, scaled (merge patch of spec.replicas), deleted when a job ends.
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [create, delete, get, list, patch, watch]
# The job's NetworkPolicies, watched as its other children. patch: the one-time upgrade clean-up of
# the previous version's head policies, whose API-server egress goes.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get, list, patch, watch]
# The previous version's per-job driver identity (NAME-driver, NAME-progress-reporter): listed and deleted once,
# on upgrade. Jobs' pods now hold no Kubernetes credentials, and the operator creates none of these.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [delete, list]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [delete, list]
# The jobs: watched, labelled with their experiment (rljob.dev/experiment, a merge patch of
# metadata.labels), deleted when ttlSecondsAfterFinished has passed, and read afresh when a decision's status
# write finds the job changed since (a conflict).
- apiGroups: [rljob.dev]
  resources: [rltrainingjobs]
  verbs: [delete, get, list, patch, watch]
# The jobs' status: the operator's alone (the progress it reads from each head included).
- apiGroups: [rljob.dev]
  resources: [rltrainingjobs/status]
  verbs: [patch]
# Children point at their job with blockOwnerDeletion: clusters with the OwnerReferencesPermissionEnforcement
# admission plugin (OpenShift, hardened distributions) allow that only to who may update the job's finalizers.
- apiGroups: [rljob.dev]
  resources: [rltrainingjobs/finalizers]
  verbs: [update]
{{- if .Values.kueue.enabled }}
# Kueue: each queued job's Workload, watched, created, activated or deactivated (a merge patch of spec.active),
# replaced when the job's pod sets change; its status read and amended (Finished, the reservation released).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [create, delete, get, list, patch, watch]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads/status]
  verbs: [patch]
{{- end }}
{{- end -}}


{{/* The container's command line: the real flags of `rljob operator` (operator/rljob/cli/operator.py). */}}
{{- define "rljob.args" -}}
- operator
- --metrics-port={{ if .Values.metrics.enabled }}{{ int .Values.metrics.port }}{{ else }}0{{ end }}
- --health-port={{ int .Values.health.port }}
{{- range .Values.watch.namespaces }}
- --namespace={{ . }}
{{- end }}
{{- if not (include "rljob.clusterScoped" .) }}
- --no-cluster-scan
{{- end }}
{{- if include "rljob.leaderElection" . }}
- --leader-elect
- --leader-election-id={{ .Values.leaderElection.leaseName }}
{{- end }}
- --default-image={{ include "rljob.jobImage" . }}
- --dns-namespace={{ .Values.jobNetwork.dnsNamespace }}
- --dns-selector={{ .Values.jobNetwork.dnsSelector }}
{{- range .Values.jobNetwork.clusterCIDRs }}
- --cluster-cidr={{ . }}
{{- end }}
{{- range .Values.jobNetwork.metricsScrapeNamespaces }}
- --metrics-scrape-namespace={{ . }}
{{- end }}
{{- if .Values.jobNetwork.requireIsolation }}
- --require-network-isolation
{{- end }}
{{- if .Values.kueue.enabled }}
- --kueue
{{- end }}
- --concurrency={{ int .Values.concurrency }}
- --log-level={{ .Values.logLevel }}
{{- /* Last, so that a flag given here wins over the chart's (argparse keeps the last value). */}}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
