package callback

// Outcome is how the Service answered a push, for Config.Observe.
type Outcome string

const (
	// OutcomeReplied: a passive reply was sent.
	OutcomeReplied Outcome = "replied"
	// OutcomeEmpty: "success" was sent: no rule or subscriber replied, or
	// the reply failed.
	OutcomeEmpty Outcome = "empty"
	// OutcomeDuplicate: a retry or replay got the stored first answer.
	OutcomeDuplicate Outcome = "duplicate"
	// OutcomeLate: the reply was not ready within the reply timeout, so
	// "success" was sent instead (the deadline fallback).
	OutcomeLate Outcome = "late"
	// OutcomeRefused: the request was not a valid push (signature,
	// timestamp, AppID, format, decryption); Err says why.
	OutcomeRefused Outcome = "refused"
)

// Observation is what an observer learns of one push: how it came and how
// it was answered, never its content or who sent it.
type Observation struct {
	MsgType string // empty when refused
	Event   string // for MsgType "event"
	Mode    string // plaintext, compatible or safe; empty when refused
	Outcome Outcome
	Err     error // why it was refused
}

func (s *Service) observe(o Observation) {
	if s.observer != nil {
		s.observer(o)
	}
}
