# At the decision API (POST /v1/decisions): GPU work is refused unless the app or its team
# holds an unexpired "gpu" exception (`qm policy exception grant gpu --team T --days N`).
package qm.admission.gpu

deny contains msg if {
	input.resources.gpu > 0
	not "gpu" in input.exceptions
	msg := sprintf("team %s asks for %v GPU(s) without a 'gpu' exception: request a time-limited one from the platform team", [input.team, input.resources.gpu])
}
