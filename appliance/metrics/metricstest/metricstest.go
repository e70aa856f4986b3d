// Package metricstest reads a Prometheus text exposition for tests, so
// they assert on series and values rather than grep the text.
package metricstest

import (
	"io"
	"maps"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one parsed scrape, by metric name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url and parses the answer, which must be a 200 in the text
// format.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	return Parse(t, resp.Body)
}

// Parse reads a text exposition.
func Parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parsing the exposition: %v", err)
	}
	return fams
}

// Labels returns the label sets of name's series.
func (f Families) Labels(name string) []map[string]string {
	fam := f[name]
	if fam == nil {
		return nil
	}
	var out []map[string]string
	for _, m := range fam.GetMetric() {
		out = append(out, labelsOf(m))
	}
	return out
}

// Value returns the value of the series of name with exactly labels (nil
// for none): a counter's or gauge's value, a histogram's count.
func (f Families) Value(name string, labels map[string]string) (float64, bool) {
	m := f.find(name, labels)
	if m == nil {
		return 0, false
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

// Type returns name's type, e.g. "COUNTER".
func (f Families) Type(name string) string {
	if fam := f[name]; fam != nil {
		return fam.GetType().String()
	}
	return ""
}

func (f Families) find(name string, labels map[string]string) *dto.Metric {
	fam := f[name]
	if fam == nil {
		return nil
	}
	if labels == nil {
		labels = map[string]string{}
	}
	for _, m := range fam.GetMetric() {
		if maps.Equal(labelsOf(m), labels) {
			return m
		}
	}
	return nil
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
