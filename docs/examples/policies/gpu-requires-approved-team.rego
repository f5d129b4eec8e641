# A GPU compute profile is refused unless the owning team holds an unexpired "gpu" exception
# (granted with `qm policy exception grant gpu --team T --days N`; it lapses by itself).
package qm.publish.gpu

gpu_requested if input.manifest.estimated_compute_profile.tier == "gpu"

gpu_requested if input.manifest.estimated_compute_profile.gpu > 0

deny contains msg if {
	gpu_requested
	not "gpu" in input.exceptions
	msg := sprintf("app %s asks for GPUs, and team %s is not approved for GPU use: request a time-limited exception from the platform team", [input.manifest.app_id, input.manifest.team])
}
