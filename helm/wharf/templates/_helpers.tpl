{{/*
Names and labels.
*/}}
{{- define "wharf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wharf.fullname" -}}
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

{{/*
The name of a resource beside the main one: <fullname>-<suffix>, with fullname shortened so the whole fits in max
characters (63 for most objects, 52 for a CronJob, whose Jobs add 11). Called with (list . "suffix" max).
*/}}
{{- define "wharf.child" -}}
{{- $ctx := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $max := index . 2 | int -}}
{{- printf "%s-%s" (include "wharf.fullname" $ctx | trunc (sub $max (add1 (len $suffix)) | int) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "wharf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wharf.instanceLabels" -}}
app.kubernetes.io/name: {{ include "wharf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Selects the registry pods only (the bundled Redis and the GC jobs carry other components).
*/}}
{{- define "wharf.selectorLabels" -}}
{{ include "wharf.instanceLabels" . }}
app.kubernetes.io/component: registry
{{- end -}}

{{- define "wharf.redisSelectorLabels" -}}
{{ include "wharf.instanceLabels" . }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "wharf.labels" -}}
helm.sh/chart: {{ include "wharf.chart" . }}
{{ include "wharf.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "wharf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wharf.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wharf.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The most registry pods that can run at once: the HPA's maximum, or replicaCount.
*/}}
{{- define "wharf.maxReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.maxReplicas | int -}}
{{- else -}}
{{- .Values.replicaCount | int -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the filesystem driver's volume can be shared by pods on several nodes.
*/}}
{{- define "wharf.filesystemShared" -}}
{{- if and .Values.storage.filesystem.persistence.enabled (has "ReadWriteMany" .Values.storage.filesystem.persistence.accessModes) -}}
true
{{- end -}}
{{- end -}}

{{/*
The Redis address Wharf uses: the bundled Redis, the external one, or empty.
*/}}
{{- define "wharf.redisAddr" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s:6379" (include "wharf.child" (list . "redis" 52)) -}}
{{- else if .Values.redis.external.addr -}}
{{- .Values.redis.external.addr -}}
{{- end -}}
{{- end -}}

{{/*
The URL clients reach the registry at (http.host): config.http.host, else the Ingress host.
*/}}
{{- define "wharf.httpHost" -}}
{{- if .Values.config.http.host -}}
{{- .Values.config.http.host -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{/*
Checks that stop a release that cannot work, each with a message saying what to change.
*/}}
{{- define "wharf.validate" -}}
{{- $replicas := include "wharf.maxReplicas" . | int -}}
{{- $driver := .Values.storage.driver -}}
{{- if not (has $driver (list "filesystem" "s3" "inmemory")) -}}
{{- fail (printf "wharf: storage.driver must be filesystem, s3 or inmemory, got %q" $driver) -}}
{{- end -}}
{{- if gt $replicas 1 -}}
{{- if and (eq $driver "filesystem") (not (include "wharf.filesystemShared" .)) -}}
{{- fail (printf "wharf: storage.driver=filesystem with %d replicas needs a volume every replica can mount: a ReadWriteOnce volume (or no persistence) gives each pod its own data, and pushes would land on one replica only. Either set replicaCount: 1 (and autoscaling.enabled: false), or set storage.filesystem.persistence.accessModes: [ReadWriteMany] with a StorageClass that offers it (NFS, CephFS, EFS, Azure Files), or use storage.driver=s3." $replicas) -}}
{{- end -}}
{{- if eq $driver "inmemory" -}}
{{- fail (printf "wharf: storage.driver=inmemory keeps images in each pod's memory, so %d replicas would each hold different images. Use replicaCount: 1, or the filesystem or s3 driver." $replicas) -}}
{{- end -}}
{{- if not (include "wharf.redisAddr" .) -}}
{{- fail (printf "wharf: %d replicas share caches, the GC lock and upload state through Redis. Set redis.enabled: true (a Redis pod with the release) or redis.external.addr: host:port." $replicas) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $driver "s3") (not .Values.storage.s3.bucket) -}}
{{- fail "wharf: storage.driver=s3 needs storage.s3.bucket (and storage.s3.region)." -}}
{{- end -}}
{{- $c := .Values.storage.s3Credentials -}}
{{- if and (eq $driver "s3") (not $c.existingSecret) (or $c.accessKey $c.secretKey) (not (and $c.accessKey $c.secretKey)) -}}
{{- fail "wharf: storage.s3Credentials needs both accessKey and secretKey (or neither, to use the pod's identity)." -}}
{{- end -}}
{{- $configStorage := get .Values.config "storage" | default dict -}}
{{- range $key := list "filesystem" "s3" "inmemory" "gcs" "azure" "swift" "oss" -}}
{{- if hasKey $configStorage $key -}}
{{- fail (printf "wharf: choose the storage driver with storage.driver and its settings under storage.%s, not config.storage.%s." $key $key) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.auth.htpasswd.enabled .Values.auth.token.enabled -}}
{{- fail "wharf: auth.htpasswd and auth.token are both enabled; registry:2 and Wharf use one auth method at a time." -}}
{{- end -}}
{{- if and .Values.auth.htpasswd.enabled (not .Values.auth.htpasswd.htpasswd) (not .Values.auth.htpasswd.existingSecret) -}}
{{- fail "wharf: auth.htpasswd.enabled needs auth.htpasswd.htpasswd (the file's content) or auth.htpasswd.existingSecret." -}}
{{- end -}}
{{- if .Values.auth.token.enabled -}}
{{- if not (and .Values.auth.token.realm .Values.auth.token.service .Values.auth.token.issuer) -}}
{{- fail "wharf: auth.token.enabled needs auth.token.realm, auth.token.service and auth.token.issuer." -}}
{{- end -}}
{{- if and (not .Values.auth.token.rootcertbundle) (not .Values.auth.token.existingSecret) -}}
{{- fail "wharf: auth.token.enabled needs auth.token.rootcertbundle (PEM) or auth.token.existingSecret." -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.redis.external.addr -}}
{{- fail "wharf: set either redis.enabled (a Redis pod with the release) or redis.external.addr, not both." -}}
{{- end -}}
{{- if and .Values.proxy.enabled (not .Values.proxy.remoteurl) -}}
{{- fail "wharf: proxy.enabled needs proxy.remoteurl (https://registry-1.docker.io for Docker Hub)." -}}
{{- end -}}
{{- end -}}

{{/*
Where each secret value comes from: the user's existing Secret, or the one the chart creates.
*/}}
{{- define "wharf.secretName" -}}
{{- include "wharf.child" (list . "secret" 63) -}}
{{- end -}}

{{/*
true when the chart has anything to put in its own Secret.
*/}}
{{- define "wharf.needsSecret" -}}
{{- $v := .Values -}}
{{- if or (and (eq $v.storage.driver "s3") (not $v.storage.s3Credentials.existingSecret) $v.storage.s3Credentials.accessKey) (and $v.auth.htpasswd.enabled (not $v.auth.htpasswd.existingSecret)) (and $v.auth.token.enabled (not $v.auth.token.existingSecret)) (and (include "wharf.redisAddr" .) (not $v.redis.existingSecret) $v.redis.password) (and $v.proxy.enabled (not $v.proxy.existingSecret) $v.proxy.username) -}}
true
{{- end -}}
{{- end -}}

{{/*
The config.yml Wharf runs with: config from values, plus the keys the chart manages.
*/}}
{{- define "wharf.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $_ := set $cfg "version" "0.1" -}}
{{- /* http */ -}}
{{- $http := deepCopy (get $cfg "http" | default dict) -}}
{{- $_ := set $http "addr" ":5000" -}}
{{- $host := include "wharf.httpHost" . -}}
{{- if $host -}}
{{- $_ := set $http "host" $host -}}
{{- else -}}
{{- $_ := unset $http "host" -}}
{{- end -}}
{{- /* Behind the Ingress every connection comes from the controller: believe its X-Forwarded-* (private ranges). */ -}}
{{- if and .Values.ingress.enabled (empty .Values.config.http.trustedproxies) -}}
{{- $_ := set $http "trustedproxies" (list "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "100.64.0.0/10" "fc00::/7") -}}
{{- end -}}
{{- if .Values.metrics.enabled -}}
{{- $_ := set $http "debug" (dict "addr" (printf ":%d" (.Values.metrics.port | int)) "prometheus" (dict "enabled" true "path" .Values.metrics.path)) -}}
{{- end -}}
{{- $_ := set $cfg "http" $http -}}
{{- /* storage */ -}}
{{- $storage := deepCopy (get $cfg "storage" | default dict) -}}
{{- $driver := .Values.storage.driver -}}
{{- if eq $driver "filesystem" -}}
{{- $_ := set $storage "filesystem" (dict "rootdirectory" .Values.storage.filesystem.rootdirectory) -}}
{{- else if eq $driver "s3" -}}
{{- $_ := set $storage "s3" (deepCopy .Values.storage.s3) -}}
{{- else -}}
{{- $_ := set $storage "inmemory" dict -}}
{{- end -}}
{{- $_ := set $storage "delete" (dict "enabled" .Values.storage.deleteEnabled) -}}
{{- if .Values.storage.redirectDisable -}}
{{- $_ := set $storage "redirect" (dict "disable" true) -}}
{{- end -}}
{{- $cache := deepCopy (get $storage "cache" | default dict) -}}
{{- $_ := set $cache "blobdescriptor" (.Values.storage.blobDescriptorCache | default (ternary "redis" "inmemory" (ne (include "wharf.redisAddr" .) ""))) -}}
{{- $_ := set $storage "cache" $cache -}}
{{- if .Values.storage.readOnly -}}
{{- $maintenance := deepCopy (get $storage "maintenance" | default dict) -}}
{{- $_ := set $maintenance "readonly" (dict "enabled" true) -}}
{{- $_ := set $storage "maintenance" $maintenance -}}
{{- end -}}
{{- $_ := set $cfg "storage" $storage -}}
{{- /* auth */ -}}
{{- /* auth: the chart's htpasswd or token section, beside whatever else config.auth holds (access rules, ...) */ -}}
{{- $auth := deepCopy (get $cfg "auth" | default dict) -}}
{{- if .Values.auth.htpasswd.enabled -}}
{{- $_ := set $auth "htpasswd" (dict "realm" .Values.auth.htpasswd.realm "path" "/etc/wharf/auth/htpasswd") -}}
{{- else if .Values.auth.token.enabled -}}
{{- $_ := set $auth "token" (dict "realm" .Values.auth.token.realm "service" .Values.auth.token.service "issuer" .Values.auth.token.issuer "rootcertbundle" "/etc/wharf/token/rootcertbundle.pem") -}}
{{- end -}}
{{- if $auth -}}
{{- $_ := set $cfg "auth" $auth -}}
{{- end -}}
{{- /* redis */ -}}
{{- $redisAddr := include "wharf.redisAddr" . -}}
{{- if $redisAddr -}}
{{- $redis := deepCopy (get $cfg "redis" | default dict) -}}
{{- $_ := set $redis "addr" $redisAddr -}}
{{- $_ := set $redis "db" (.Values.redis.db | int) -}}
{{- $_ := set $cfg "redis" $redis -}}
{{- end -}}
{{- /* proxy */ -}}
{{- if .Values.proxy.enabled -}}
{{- $proxy := dict "remoteurl" .Values.proxy.remoteurl -}}
{{- if .Values.proxy.ttl -}}
{{- $_ := set $proxy "ttl" .Values.proxy.ttl -}}
{{- end -}}
{{- $_ := set $cfg "proxy" $proxy -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
Environment variables carrying secrets into Wharf as REGISTRY_* overrides, so config.yml never holds one.
*/}}
{{- define "wharf.secretEnv" -}}
{{- $v := .Values -}}
{{- $own := include "wharf.secretName" . -}}
{{- if eq $v.storage.driver "s3" -}}
{{- $c := $v.storage.s3Credentials -}}
{{- if $c.existingSecret }}
- name: REGISTRY_STORAGE_S3_ACCESSKEY
  valueFrom:
    secretKeyRef:
      name: {{ $c.existingSecret }}
      key: {{ $c.accessKeyKey }}
- name: REGISTRY_STORAGE_S3_SECRETKEY
  valueFrom:
    secretKeyRef:
      name: {{ $c.existingSecret }}
      key: {{ $c.secretKeyKey }}
{{- else if $c.accessKey }}
- name: REGISTRY_STORAGE_S3_ACCESSKEY
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: s3-accesskey
- name: REGISTRY_STORAGE_S3_SECRETKEY
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: s3-secretkey
{{- end }}
{{- end -}}
{{- if include "wharf.redisAddr" . -}}
{{- if $v.redis.existingSecret }}
- name: REGISTRY_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.existingSecret }}
      key: {{ $v.redis.existingSecretKey }}
{{- else if $v.redis.password }}
- name: REGISTRY_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: redis-password
{{- end }}
{{- end -}}
{{- if $v.proxy.enabled -}}
{{- if $v.proxy.existingSecret }}
- name: REGISTRY_PROXY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.proxy.existingSecret }}
      key: {{ $v.proxy.usernameKey }}
- name: REGISTRY_PROXY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.proxy.existingSecret }}
      key: {{ $v.proxy.passwordKey }}
{{- else if $v.proxy.username }}
- name: REGISTRY_PROXY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: proxy-username
- name: REGISTRY_PROXY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $own }}
      key: proxy-password
{{- end }}
{{- end -}}
{{- end -}}

{{/*
Volumes shared by the registry Deployment and the GC CronJob.
*/}}
{{- define "wharf.volumes" -}}
- name: config
  configMap:
    name: {{ include "wharf.child" (list . "config" 63) }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if eq .Values.storage.driver "filesystem" }}
- name: data
{{- if .Values.storage.filesystem.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.storage.filesystem.persistence.existingClaim | default (include "wharf.child" (list . "data" 63)) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- if .Values.auth.htpasswd.enabled }}
- name: htpasswd
  secret:
    secretName: {{ .Values.auth.htpasswd.existingSecret | default (include "wharf.secretName" .) }}
    items:
      - key: {{ ternary .Values.auth.htpasswd.existingSecretKey "htpasswd" (ne .Values.auth.htpasswd.existingSecret "") }}
        path: htpasswd
{{- end }}
{{- if .Values.auth.token.enabled }}
- name: token
  secret:
    secretName: {{ .Values.auth.token.existingSecret | default (include "wharf.secretName" .) }}
    items:
      - key: {{ ternary .Values.auth.token.existingSecretKey "rootcertbundle.pem" (ne .Values.auth.token.existingSecret "") }}
        path: rootcertbundle.pem
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "wharf.volumeMounts" -}}
- name: config
  mountPath: /etc/wharf/config.yml
  subPath: config.yml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if eq .Values.storage.driver "filesystem" }}
- name: data
  mountPath: {{ .Values.storage.filesystem.rootdirectory }}
{{- end }}
{{- if .Values.auth.htpasswd.enabled }}
- name: htpasswd
  mountPath: /etc/wharf/auth
  readOnly: true
{{- end }}
{{- if .Values.auth.token.enabled }}
- name: token
  mountPath: /etc/wharf/token
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Environment of the registry and GC containers.
*/}}
{{- define "wharf.env" -}}
{{- $secretEnv := include "wharf.secretEnv" . -}}
{{- if or $secretEnv .Values.extraEnv }}
env:
{{- with $secretEnv }}
{{- . | trim | nindent 2 }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- with .Values.extraEnvFrom }}
envFrom:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
"true" when config.http.tls makes Wharf speak HTTPS itself (the probes then use HTTPS).
*/}}
{{- define "wharf.tls" -}}
{{- if dig "http" "tls" "certificate" "" .Values.config -}}
true
{{- end -}}
{{- end -}}
