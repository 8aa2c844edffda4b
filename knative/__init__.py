"""mlfn's Knative back end: turns function specs into cluster objects, builds images, applies them."""
