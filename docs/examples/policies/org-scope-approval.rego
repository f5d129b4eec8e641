# Org-wide data scope needs a reviewer's approval before the app is published.
# Without an approval the version waits in pending_approval; a reviewer's approval lets it
# through, a rejection ends it.
package qm.publish.org_scope

require_approval contains msg if {
	"org" in input.manifest.data_scopes
	not input.approval.approved
	msg := sprintf("app %s declares the org-wide data scope: a reviewer must approve it", [input.manifest.app_id])
}
