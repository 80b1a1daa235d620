package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
)

// DecodeStrict decodes JSON into v, rejecting unknown fields, values of
// the wrong type, bad quantities and bad durations. Its errors are
// ValidationErrors naming the field's path ("spec.template.ports[0].host"),
// which encoding/json alone does not give for unknown fields or for
// errors from custom unmarshalers.
func DecodeStrict(data []byte, v any) error {
	if canonical(data, v) {
		return nil
	}
	return decodeChecked(data, v)
}

// canonical decodes data into v, a pointer to a zero value, and reports
// whether data is what encoding/json writes for the result, byte for
// byte: every field then was known, of its type and in its canonical
// form, and decodeChecked could find nothing wrong. Clients of the API
// (api/client, the agents) write just that. A node's heartbeat, checked
// field by field through a generic decode first, cost the server three
// times as much as a decode and an encode. Otherwise v is left zero for
// decodeChecked.
func canonical(data []byte, v any) bool {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || !rv.Elem().IsZero() {
		return false
	}
	if json.Unmarshal(data, v) == nil {
		if b, err := json.Marshal(v); err == nil && bytes.Equal(b, bytes.TrimSpace(data)) {
			return true
		}
	}
	rv.Elem().SetZero()
	return false
}

// decodeChecked is DecodeStrict checking every field of data's generic
// decoding against v's type first.
func decodeChecked(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return &ValidationError{Fields: []FieldError{{Reason: fmt.Sprintf("malformed JSON: %v", err)}}}
	}
	if dec.More() {
		return &ValidationError{Fields: []FieldError{{Reason: "malformed JSON: data after the value"}}}
	}
	var e errs
	checkShape(&e, "", raw, reflect.TypeOf(v).Elem())
	if err := e.err(); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		field := ""
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field = te.Field
		}
		return &ValidationError{Fields: []FieldError{{Field: field, Reason: err.Error()}}}
	}
	return nil
}

var (
	quantityType = reflect.TypeFor[Quantity]()
	durationType = reflect.TypeFor[Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

// checkShape walks a generically decoded JSON value alongside the Go type
// it will be decoded into.
func checkShape(e *errs, path string, v any, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return // null leaves the zero value, as encoding/json does
	}
	if checkTextValue(e, path, v, t) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			e.add(path, "expected an object, got %s", jsonTypeName(v))
			return
		}
		fields := structFields(t)
		for k, fv := range m {
			f, ok := fields[k]
			if !ok {
				e.add(join(path, k), "unknown field %q", k)
				continue
			}
			checkShape(e, join(path, k), fv, f)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			e.add(path, "expected an object, got %s", jsonTypeName(v))
			return
		}
		for k, fv := range m {
			checkShape(e, join(path, k), fv, t.Elem())
		}
	case reflect.Slice:
		checkList(e, path, v, t)
	default:
		checkScalar(e, path, v, t.Kind())
	}
}

// checkTextValue checks a value of a type written as text (a quantity, a
// duration, a time) and reports whether t is one.
func checkTextValue(e *errs, path string, v any, t reflect.Type) bool {
	switch t {
	case quantityType:
		b, _ := json.Marshal(v)
		if _, err := quantityFromJSON(b); err != nil {
			e.add(path, "%v", err)
		}
	case durationType:
		b, _ := json.Marshal(v)
		if _, err := durationFromJSON(b); err != nil {
			e.add(path, "%v", err)
		}
	case timeType:
		s, ok := v.(string)
		if !ok {
			e.add(path, "expected a time string (RFC 3339), got %s", jsonTypeName(v))
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			e.add(path, "invalid time %q: use RFC 3339", s)
		}
	default:
		return false
	}
	return true
}

// checkList checks a list, or bytes (base64 in a string), of slice type t.
func checkList(e *errs, path string, v any, t reflect.Type) {
	if t.Elem().Kind() == reflect.Uint8 {
		str, ok := v.(string)
		if !ok {
			e.add(path, "expected base64 in a string, got %s", jsonTypeName(v))
		} else if _, err := base64.StdEncoding.DecodeString(str); err != nil {
			e.add(path, "invalid base64: %v", err)
		}
		return
	}
	a, ok := v.([]any)
	if !ok {
		e.add(path, "expected a list, got %s", jsonTypeName(v))
		return
	}
	for i, ev := range a {
		checkShape(e, fmt.Sprintf("%s[%d]", path, i), ev, t.Elem())
	}
}

// checkScalar checks a string, boolean or number of kind k.
func checkScalar(e *errs, path string, v any, k reflect.Kind) {
	switch k {
	case reflect.String:
		switch v.(type) {
		case string:
		case bool, json.Number:
			// YAML reads yes, on, 1.10 as booleans and numbers.
			e.add(path, "expected a string, got %s (quote it)", jsonTypeName(v))
		default:
			e.add(path, "expected a string, got %s", jsonTypeName(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			e.add(path, "expected true or false, got %s", jsonTypeName(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			e.add(path, "expected an integer, got %s", jsonTypeName(v))
		} else if _, err := n.Int64(); err != nil {
			e.add(path, "expected an integer, got %s", n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok || strings.HasPrefix(string(n), "-") {
			e.add(path, "expected a non-negative integer, got %s", jsonTypeName(v))
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			e.add(path, "expected a number, got %s", jsonTypeName(v))
		}
	}
}

func jsonTypeName(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return fmt.Sprintf("%v", x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// structFields maps the JSON names of t's fields (embedded structs
// flattened, as encoding/json does) to their types.
func structFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					if _, dup := m[k]; !dup {
						m[k] = v
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m
}
