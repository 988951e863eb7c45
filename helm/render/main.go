// A stand-in for `helm template`, for the chart test on machines without helm: it renders helm/wharf the way
// Helm 3 does (text/template with the sprig functions, include, tpl, required, toYaml, fail, missingkey=zero,
// values merged from values.yaml and -f files, numbers from YAML read as float64 like Helm's JSON round trip) and
// prints {"files": {"wharf/templates/x.yaml": "..."}} or {"error": "..."} as JSON.
//
//	go run helm/render/main.go <chart dir> [-f values.yaml ...] [--set-json '{"a":{"b":1}}'] [--strict]
//
// Build in GOPATH mode against Debian's packages (golang-go, golang-github-masterminds-sprig-dev,
// golang-gopkg-yaml.v3-dev): GO111MODULE=off GOPATH=/usr/share/gocode go build -o <out> helm/render/main.go
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

func die(format string, args ...interface{}) {
	out, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(format, args...)})
	os.Stdout.Write(append(out, '\n'))
	os.Exit(1)
}

// readYAML reads a YAML mapping and normalises it through JSON, as Helm does (ints become float64).
func readYAML(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		die("%v", err)
	}
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		die("%s: %v", path, err)
	}
	return normalise(raw)
}

func normalise(raw interface{}) map[string]interface{} {
	js, err := json.Marshal(raw)
	if err != nil {
		die("%v", err)
	}
	out := map[string]interface{}{}
	if string(js) == "null" {
		return out
	}
	if err := json.Unmarshal(js, &out); err != nil {
		die("%v", err)
	}
	return out
}

// merge lays src over dst: maps merge key by key, a null removes the key, anything else replaces.
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = merge(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// wholeNumbers turns float64 values without a fraction into int64, so toYaml writes 4194304 and not 4.194304e+06:
// Helm's toYaml goes through JSON, which writes whole floats as integers.
func wholeNumbers(v interface{}) interface{} {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e18 {
			return int64(x)
		}
		return x
	case map[string]interface{}:
		out := make(map[string]interface{}, len(x))
		for k, e := range x {
			out[k] = wholeNumbers(e)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(x))
		for i, e := range x {
			out[i] = wholeNumbers(e)
		}
		return out
	}
	return v
}

func toYAML(v interface{}) string {
	v = wholeNumbers(v)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func main() {
	if len(os.Args) < 2 {
		die("usage: render <chart dir> [-f values.yaml ...] [--set-json JSON] [--strict]")
	}
	dir := os.Args[1]
	values := readYAML(filepath.Join(dir, "values.yaml"))
	missingKey := "missingkey=zero"
	for i := 2; i < len(os.Args); i++ {
		switch os.Args[i] {
		case "--strict":
			// as `helm lint --strict`: reading a key that does not exist is an error
			missingKey = "missingkey=error"
		case "-f":
			i++
			values = merge(values, readYAML(os.Args[i]))
		case "--set-json":
			i++
			var extra map[string]interface{}
			if err := json.Unmarshal([]byte(os.Args[i]), &extra); err != nil {
				die("--set-json: %v", err)
			}
			values = merge(values, extra)
		default:
			die("unknown argument %s", os.Args[i])
		}
	}
	chart := readYAML(filepath.Join(dir, "Chart.yaml"))
	chartName, _ := chart["name"].(string)
	chartMeta := map[string]interface{}{}
	for k, v := range chart {
		chartMeta[strings.ToUpper(k[:1])+k[1:]] = v
	}

	t := template.New("chart")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["toJson"] = func(v interface{}) string { b, _ := json.Marshal(v); return string(b) }
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		var raw interface{}
		if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
			return map[string]interface{}{"Error": err.Error()}
		}
		return normalise(raw)
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		n, err := c.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf strings.Builder
		err = n.Execute(&buf, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["lookup"] = func(...interface{}) map[string]interface{} { return map[string]interface{}{} }
	t.Funcs(funcs).Option(missingKey)

	base := chartName + "/templates"
	entries, err := os.ReadDir(filepath.Join(dir, "templates"))
	if err != nil {
		die("%v", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "templates", e.Name()))
		if err != nil {
			die("%v", err)
		}
		name := base + "/" + e.Name()
		if _, err := t.New(name).Parse(string(data)); err != nil {
			die("%v", err)
		}
		names = append(names, name)
	}
	sort.Strings(names)

	files := map[string]string{}
	for _, name := range names {
		if strings.HasPrefix(filepath.Base(name), "_") {
			continue
		}
		top := map[string]interface{}{
			"Values":       values,
			"Chart":        chartMeta,
			"Release":      map[string]interface{}{"Name": "wharf", "Namespace": "registry", "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1},
			"Capabilities": map[string]interface{}{"KubeVersion": map[string]interface{}{"Version": "v1.30.0", "Major": "1", "Minor": "30"}},
			"Template":     map[string]interface{}{"Name": name, "BasePath": base},
		}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, name, top); err != nil {
			die("%v", err)
		}
		files[name] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	out, _ := json.Marshal(map[string]interface{}{"files": files})
	os.Stdout.Write(append(out, '\n'))
}
