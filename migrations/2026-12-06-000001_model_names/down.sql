DROP INDEX models_name;
