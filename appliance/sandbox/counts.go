package sandbox

import "maps"

// Counters exist so tests can assert how often the appliance really went
// upstream (caching, single-flight refresh, retries). They are updated in
// ServeHTTP, see countAndFault.

// Count returns how many requests endpoint received, faulted and failed
// ones included.
func (s *Sandbox) Count(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[endpoint]
}

// Counts returns a copy of every endpoint's count.
func (s *Sandbox) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}

// ResetCounts sets every count to zero.
func (s *Sandbox) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.counts)
}
