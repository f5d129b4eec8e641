# Every app names the cost center that pays for it in its manifest.
package qm.publish.cost_center

deny contains msg if {
	not input.manifest.cost_center
	msg := sprintf("app %s has no cost_center in its manifest: name the cost center that pays for it", [input.manifest.app_id])
}
