package controller

// RestAfter is restAfter, for the external tests to check the rests
// between passes against.
var RestAfter = restAfter
