package api

// MaxStatusBatch is how many instance statuses one batch report may carry:
// what one etcd transaction takes on any cluster (etcd's default limit of
// 128 operations, less room for the guards).
const MaxStatusBatch = 100

// StatusReport is one instance's status in a node's batch report. UID
// names the instance the status is about: a report about an instance
// since deleted and made again under its name is dropped.
type StatusReport struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	UID       string         `json:"uid,omitempty"`
	Status    InstanceStatus `json:"status"`
}

// StatusBatch is the body of a node's batch status report: PUT
// /v1/nodes/{name}/instancestatus.
type StatusBatch struct {
	Items []StatusReport `json:"items"`
}

// StatusBatchResult answers a StatusBatch: one entry per item, in order,
// with the reason it was not written ("" when it was), and whether that
// is final (the instance is gone or moved) or worth sending again.
type StatusBatchResult struct {
	Results []StatusResult `json:"results"`
}

// StatusResult is one item's outcome in a StatusBatchResult.
type StatusResult struct {
	Error string `json:"error,omitempty"`
	// Gone: the instance no longer exists as reported (deleted, made
	// again, or bound elsewhere); the report is not to be sent again.
	Gone bool `json:"gone,omitempty"`
}
