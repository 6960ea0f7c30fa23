#!/usr/bin/env node
// Thin launcher kept outside dist/ so that npm links the bin at install time, before the first build.
import '../dist/bin.js';
