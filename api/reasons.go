package api

// Reasons an instance's status gives for a start that failed
// (InstanceStatus.Reason), which clients act on.
const (
	// ReasonStartError: the container could not be made or started, for
	// a cause a retry does not mend by itself (an image that does not
	// exist, a command or spec the runtime refuses).
	ReasonStartError = "StartError"
	// ReasonStartBackOff: starting failed for a cause that may pass by
	// itself (the servers or a registry out of reach, a pull that timed
	// out, a server error); the agent tries again at RestartAt.
	ReasonStartBackOff = "StartBackOff"
)
